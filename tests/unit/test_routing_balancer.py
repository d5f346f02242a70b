"""The balancer: weighted first picks, failover order, cool-downs and Retry-After."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from email.utils import format_datetime

from llamakey import config
from llamakey.config.catalogue import CatalogueModel
from llamakey.routing import Balancer, retry_after_seconds


def model(*weights: int) -> CatalogueModel:
    deployments = [
        {"name": f"d{i}", "kind": "openai", "keys": ["literal-key-0123456789"], "weight": w}
        for i, w in enumerate(weights)
    ]
    data = {"models": {"pool": {"deployments": deployments}}}
    found = config.resolve(config.parse(data), None).models.lookup("pool")
    assert found is not None
    return found


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_first_picks_follow_the_weights_exactly_and_spread_out() -> None:
    pool, balancer = model(3, 1, 0), Balancer()
    firsts = [balancer.order(pool)[0].name for _ in range(40)]
    assert Counter(firsts) == {"d0": 30, "d1": 10}  # weight 0: never first
    assert "d1d1" not in "".join(firsts)  # no runs of the lighter one
    # Every order holds every deployment: the others are the failovers, heaviest first.
    assert [d.name for d in balancer.order(model(1, 5, 2))] == ["d1", "d2", "d0"]


def test_a_deployment_in_cool_down_is_skipped_then_comes_back() -> None:
    clock = Clock()
    pool, balancer = model(3, 1), Balancer(clock)
    d0, d1 = pool.deployments
    balancer.cool_down(d0, 5)
    assert [d.name for d in balancer.order(pool)] == ["d1", "d0"]  # last, not dropped
    assert balancer.cooling(d0)
    clock.now += 5
    assert not balancer.cooling(d0)
    assert balancer.order(pool)[0].name == "d0"
    balancer.cool_down(d0, 10)
    balancer.cool_down(d1, 2)
    assert [d.name for d in balancer.order(pool)] == ["d1", "d0"]  # soonest back first
    balancer.cool_down(d1, 1)  # a shorter one does not cut a longer one short
    clock.now += 1.5
    assert balancer.cooling(d1)


def test_retry_after_in_seconds_or_as_a_date_capped_at_an_hour() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC).timestamp()
    assert retry_after_seconds("7", now) == 7
    later = datetime(2026, 12, 1, 12, 0, 30, tzinfo=UTC)
    assert retry_after_seconds(format_datetime(later, usegmt=True), now) == 30
    assert retry_after_seconds("86400", now) == 3600
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None
