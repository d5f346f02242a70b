"""Soft limits (`steps.alerts`): a counter reaching `warn_at` of its limit warns once per window
(per process, and once across processes sharing a store), at admission or at settlement; the
alert's JSON; the POST off the loop with retries, signed, failures logged without the URL and
never raised; `[alerts]` and `warn_at` validated with their TOML paths."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from llamakey import advice, config
from llamakey.config import Webhook
from llamakey.state import GatewayState
from llamakey.steps.alerts import SoftLimits, post
from llamakey.steps.authorize import Authorize
from llamakey.steps.ratelimit import RateLimits
from llamakey.store import MemoryCounterStore, Window
from tests.harness import free_port
from tests.unit.builders import config_data
from tests.unit.test_step_budgets import NOW, PRICES, answer, body, call


class Sent:
    """A stand-in for `post`: what was sent, from which thread."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.threads: list[str] = []
        self.event = threading.Event()

    def __call__(self, webhook: Webhook, content: bytes) -> bool:
        self.bodies.append(json.loads(content))
        self.threads.append(threading.current_thread().name)
        self.event.set()
        return True

    def one(self) -> dict[str, Any]:
        assert self.event.wait(5), "no alert sent"
        (alert,) = self.bodies
        return alert


def data(**defaults: Any) -> dict[str, Any]:
    d = copy.deepcopy(config_data())
    d["defaults"] = defaults
    d["prices"] = PRICES
    d["alerts"] = {"webhook_url": "http://127.0.0.1:9/hook"}
    return d


def setup(
    d: dict[str, Any], store: MemoryCounterStore | None = None, clock: list[float] | None = None
) -> tuple[GatewayState, Authorize, RateLimits, Sent]:
    state = GatewayState()
    state.install(config.resolve(config.parse(d), None))
    now = clock if clock is not None else [NOW]
    store = store if store is not None else MemoryCounterStore(lambda: now[0])
    rate = RateLimits(state, store, clock=lambda: now[0])
    sent = Sent()
    rate.soft = SoftLimits(state, lambda: now[0], sent)
    return state, Authorize(state, rate), rate, sent


async def test_a_budget_warns_once_when_its_counter_reaches_warn_at(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Each call reserves about $0.21 (100 output tokens at $0.002, the body at $0.001 a token).
    state, authorize, rate, sent = setup(data(budgets=[{"usd": 1.0, "per": "day", "warn_at": 0.3}]))
    caplog.set_level(logging.WARNING)
    await call(state, authorize, body(100))
    await rate.soft.flush()
    assert sent.bodies == [] and "soft limit" not in caplog.text
    await call(state, authorize, body(100))  # $0.42 of $1.00
    await call(state, authorize, body(100))
    await rate.soft.flush()
    alert = sent.one()
    assert sent.threads[0] != threading.current_thread().name  # off the event loop
    assert alert == {
        "event": "soft_limit",
        "rule": "budget",
        "source": "defaults.budgets.0",
        "description": "$1.00 per day (defaults.budgets.0)",
        "scope": "user",
        "scope_id": "alice",
        "user": "alice",
        "counter": "bg:user:alice:*:*:usd",
        "unit": "usd",
        "spent": alert["spent"],
        "limit": 1.0,
        "warn_at": 0.3,
        "window": "day",
        "window_start": "2026-12-01T00:00:00Z",
        "resets_at": "2026-12-02T00:00:00Z",
    }
    assert 0.3 <= alert["spent"] < 0.5
    (line,) = [r.getMessage() for r in caplog.records if "soft limit" in r.getMessage()]
    assert "of $1.00 per day (defaults.budgets.0) reached" in line and "for alice" in line
    assert "resets 2026-12-02T00:00:00Z" in line


async def test_a_settlement_that_reaches_the_threshold_warns() -> None:
    # The call reserves 13 tokens (its body, max_tokens 1); its real usage is 15. The soft
    # limit, 35 % of 40 tokens, is 14: reached when the answer settles, not before.
    state, authorize, rate, sent = setup(
        data(rate_limits=[{"tokens": 40, "per": "hour", "warn_at": 0.35}])
    )
    f = await call(state, authorize, body(1))
    await rate.soft.flush()
    assert sent.bodies == []
    await answer(state, rate, f, 0.001)
    await rate.soft.flush()
    alert = sent.one()
    assert (alert["rule"], alert["unit"], alert["spent"], alert["limit"]) == (
        "rate_limit",
        "tokens",
        15,
        40.0,
    )


async def test_two_proxies_on_one_store_warn_once_and_a_new_window_warns_again() -> None:
    clock = [NOW]
    store = MemoryCounterStore(lambda: clock[0])
    d = data(rate_limits=[{"requests": 10, "per": "minute", "warn_at": 0.1}])
    one = setup(d, store, clock)
    two = setup(d, store, clock)
    for state, authorize, rate, _ in (one, two, one):
        await call(state, authorize, body())
        await rate.soft.flush()
    assert len(one[3].bodies) + len(two[3].bodies) == 1
    clock[0] += 60  # the next minute
    state, authorize, rate, sent = two
    await call(state, authorize, body())
    await rate.soft.flush()
    assert sent.event.wait(5) and len(one[3].bodies) + len(sent.bodies) == 2


async def test_without_warn_at_nothing_is_claimed_or_sent() -> None:
    store = MemoryCounterStore(lambda: NOW)
    state, authorize, rate, sent = setup(
        data(rate_limits=[{"requests": 2, "per": "minute"}]), store
    )
    await call(state, authorize, body())
    await call(state, authorize, body())
    await rate.soft.flush()
    assert sent.bodies == []
    assert await store.total("rl:user:alice:*:*:requests:warned", Window(60)) == 0


# ------------------------------------------------------------------ the POST


class _Receiver(ThreadingHTTPServer):
    def __init__(self, statuses: list[int]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.statuses = statuses
        self.got: list[tuple[dict[str, str], bytes]] = []


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        content = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.server.got.append(({k.lower(): v for k, v in self.headers.items()}, content))
        self.send_response(self.server.statuses.pop(0) if self.server.statuses else 204)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[_Receiver]:
    server = _Receiver(list(getattr(request, "param", [])))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def hook(server: _Receiver, retries: int = 2) -> Webhook:
    url = f"http://127.0.0.1:{server.server_address[1]}/hook?token=t0ps3cret"
    return Webhook(url, {"Authorization": "Bearer hooktoken"}, b"s3cret", 2.0, retries)


@pytest.mark.parametrize("receiver", [[500, 429]], indirect=True)
def test_post_retries_a_5xx_and_a_429_then_delivers_signed(receiver: _Receiver) -> None:
    waits: list[float] = []
    assert post(hook(receiver), b'{"a": 1}', waits.append)
    assert len(receiver.got) == 3 and waits == [0.5, 1.0]
    headers, content = receiver.got[-1]
    assert content == b'{"a": 1}'
    assert headers["authorization"] == "Bearer hooktoken"
    digest = hmac.new(b"s3cret", content, hashlib.sha256).hexdigest()
    assert headers["x-llamakey-signature"] == f"sha256={digest}"


@pytest.mark.parametrize("receiver", [[400]], indirect=True)
def test_post_gives_up_on_a_4xx_and_logs_without_the_url(
    receiver: _Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    assert not post(hook(receiver), b"{}", lambda _: None)
    assert len(receiver.got) == 1
    assert "not delivered to [alerts] webhook: HTTP 400" in caplog.text
    assert "t0ps3cret" not in caplog.text and "127.0.0.1" not in caplog.text


def test_post_to_nobody_fails_after_its_retries_and_never_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    webhook = Webhook(f"http://127.0.0.1:{free_port()}/x", {}, None, 1.0, 1)  # nobody there
    waits: list[float] = []
    assert not post(webhook, b"{}", waits.append)
    assert waits == [0.5] and "not delivered" in caplog.text


# ------------------------------------------------------------------ configuration


def test_warn_at_and_alerts_are_validated_with_their_toml_paths(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    d = data(budgets=[{"usd": 1.0, "per": "day", "warn_at": 1.5}])
    with pytest.raises(config.ConfigError, match=r"defaults\.budgets\.0\.warn_at: got 1\.5"):
        config.parse(d)
    d = data(rate_limits=[{"requests": 1, "per": "day", "warn_at": 0}])
    with pytest.raises(config.ConfigError, match=r"defaults\.rate_limits\.0\.warn_at"):
        config.parse(d)
    d = data()
    d["alerts"] = {"webhook_url": "ftp://hooks/t0ps3cret"}
    with pytest.raises(config.ConfigError, match=r"alerts\.webhook_url: expected a URL") as bad:
        config.parse(d)
    assert "t0ps3cret" not in str(bad.value)
    d["alerts"] = {"webhook_url": "https://hooks.example.com/x", "secret": "${LMK_UT_NO_SUCH}"}
    monkeypatch.delenv("LMK_UT_NO_SUCH", raising=False)
    with pytest.raises(config.ConfigError, match=r"alerts\.secret refers to LMK_UT_NO_SUCH"):
        config.resolve(config.parse(d), None)
    monkeypatch.setenv("LMK_UT_HOOK_SECRET", "s3cret")
    d["alerts"] = {
        "webhook_url": "https://hooks.example.com/x",
        "secret": "${LMK_UT_HOOK_SECRET}",
        "headers": {"Authorization": "Bearer ${LMK_UT_HOOK_SECRET}"},
    }
    webhook = config.resolve(config.parse(d), None).webhook
    assert webhook is not None and webhook.secret == b"s3cret"
    assert webhook.headers == {"Authorization": "Bearer s3cret"}
    assert (webhook.timeout_seconds, webhook.retries) == (5.0, 2)


def test_two_budgets_folded_on_one_counter_keep_the_earlier_warning() -> None:
    d = data(budgets=[{"usd": 10.0, "per": "day", "warn_at": 0.9}])
    d["groups"]["research"]["budgets"] = [{"usd": 20.0, "per": "day", "warn_at": 0.4}]
    (budget,) = config.resolve(config.parse(d), None).policies["alice"].budgets
    assert budget.usd == 10.0 and budget.warn_at == pytest.approx(0.8)  # $8, research's


def test_a_literal_alert_secret_is_warned_of_by_its_toml_path() -> None:
    d = data()
    d["alerts"] = {"webhook_url": "https://hooks.example.com/x", "secret": "s3cret-literal"}
    (warning,) = advice.warnings(config.resolve(config.parse(d), None))
    assert warning.startswith("alerts.secret in the configuration is a literal secret")
    assert "s3cret-literal" not in warning
