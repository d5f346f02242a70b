"""The order in which a routed request tries a model's deployments, and their cool-downs.

The first deployment is picked by smooth weighted round-robin (nginx's: each pick adds every
weight to its deployment's running score, takes the highest and subtracts the total), so over
any run of requests each deployment's share is its weight's, exactly, with the picks spread
out rather than in runs. The others follow as failovers, heaviest first. A deployment that
answered 429 or 5xx, or could not be reached, is in cool-down for its `Retry-After` (else the
model's `cooldown_seconds`): it is skipped while others are available, and tried last (the
one whose cool-down ends first before the others) when none is.

State is per process, in memory: each proxy process balances and cools down on its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

from llamakey.config.catalogue import CatalogueModel, Deployment

MAX_COOLDOWN_SECONDS = 3600.0


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delay-seconds or an HTTP date), capped at
    an hour; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, IndexError):
            return None
    return min(max(seconds, 0.0), MAX_COOLDOWN_SECONDS)


class Balancer:
    """Per-deployment scores and cool-downs, kept across reloads by deployment name."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._scores: dict[str, float] = {}
        self._cool_until: dict[str, float] = {}

    def order(self, model: CatalogueModel) -> list[Deployment]:
        """The deployments in the order this request tries them."""
        now = self._clock()
        ready = [d for d in model.deployments if self._cool_until.get(d.name, 0.0) <= now]
        cooling = sorted(
            (d for d in model.deployments if d not in ready),
            key=lambda d: self._cool_until[d.name],
        )
        weighted = [d for d in ready if d.weight > 0]
        first: list[Deployment] = []
        if weighted:
            total = sum(d.weight for d in weighted)
            for d in weighted:
                self._scores[d.name] = self._scores.get(d.name, 0.0) + d.weight
            best = max(weighted, key=lambda d: self._scores[d.name])
            self._scores[best.name] -= total
            first = [best]
        rest = sorted((d for d in ready if d not in first), key=lambda d: -d.weight)
        return [*first, *rest, *cooling]

    def cool_down(self, deployment: Deployment, seconds: float) -> None:
        """Skip `deployment` for `seconds` (a later, longer cool-down wins)."""
        until = self._clock() + seconds
        if until > self._cool_until.get(deployment.name, 0.0):
            self._cool_until[deployment.name] = until

    def cooling(self, deployment: Deployment) -> bool:
        return self._cool_until.get(deployment.name, 0.0) > self._clock()
