"""Soft limits against a real `lmk serve`: a budget and a rate limit with `warn_at` each log one
warning and POST one signed JSON alert to a webhook receiver this test runs, the first time
their counter reaches the threshold in the window; the hard limit still refuses at 100 %."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.conftest import make_gateway
from tests.e2e.test_audit import rows
from tests.e2e.test_rules_restart import _calls
from tests.harness import free_port, wait_until
from tests.mock_upstream import MockUpstream

SECRET = "whsec-test-0123456789"


class Receiver(ThreadingHTTPServer):
    """A webhook receiver on a free loopback port: keeps every POST (headers and JSON)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Hook)
        self.posts: list[tuple[dict[str, str], bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/lmk"


class _Hook(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.server.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_a_soft_limit_warns_once_and_posts_one_signed_alert(
    tmp_path_factory: pytest.TempPathFactory,
    mock: MockUpstream,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LMK_TEST_ALERT_SECRET", SECRET)
    rules = f"""
[defaults]
rate_limits = [{{ requests = 3, per = "day", model = "gpt-4o", warn_at = 0.6 }}]
budgets = [
  {{ usd = 100.0, per = "day", model = "gpt-4o-mini", reserve_output = 20, warn_at = 0.5 }},
]

[alerts]
webhook_url = "{receiver.url}"
secret = "${{LMK_TEST_ALERT_SECRET}}"
headers = {{ X-Team = "research" }}

[prices."gpt-4o-mini"]
input_per_mtok = 1000000
output_per_mtok = 1000000
cache_read_per_mtok = 1000000
"""
    gw = make_gateway(tmp_path_factory.mktemp("soft"), mock, extra_toml=rules)
    gw.start()
    try:
        out = _calls(gw, *["gpt-4o"] * 3, *["gpt-4o-mini"] * 3)
        # 2 of 3 requests reach 60 %; $75 of $100 (reservations included) reaches 50 %; the
        # third budget call would pass $100: refused as ever.
        assert out[:5] == ["ok"] * 5
        assert "alice: $100.00 per day (defaults.budgets.0) is spent" in out[5]
        wait_until(lambda: len(rows(gw.audit_db, "completed_ts is not null")) >= 6, "6 rows")
        wait_until(lambda: len(receiver.posts) >= 2, "two alerts")
        log = gw.log.read_text()
        assert log.count("soft limit: ") == 2, log

        alerts = {}
        for headers, body in receiver.posts:
            expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            assert headers["x-llamakey-signature"] == f"sha256={expected}"
            assert headers["content-type"] == "application/json"
            assert headers["x-team"] == "research"
            alert = json.loads(body)
            alerts[alert["rule"]] = alert
        limit, budget = alerts["rate_limit"], alerts["budget"]
        assert {k: limit[k] for k in ("source", "user", "scope", "scope_id", "unit")} == {
            "source": "defaults.rate_limits.0",
            "user": "alice",
            "scope": "user",
            "scope_id": "alice",
            "unit": "requests",
        }
        assert (limit["spent"], limit["limit"], limit["warn_at"], limit["window"]) == (
            2,
            3,
            0.6,
            "day",
        )
        assert budget["source"] == "defaults.budgets.0" and budget["unit"] == "usd"
        assert 50 <= budget["spent"] < 100 and budget["limit"] == 100.0
        assert budget["resets_at"].endswith("T00:00:00Z")
        assert budget["counter"] == "bg:user:alice:*:gpt-4o-mini:usd"
        assert SECRET not in log and receiver.url not in log
    finally:
        gw.stop()


def test_an_unreachable_webhook_changes_nothing_for_requests(
    tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream
) -> None:
    rules = f"""
[defaults]
rate_limits = [{{ requests = 3, per = "day", warn_at = 0.2 }}]

[alerts]
webhook_url = "http://127.0.0.1:{free_port()}/nobody-listens"
retries = 0
"""
    gw = make_gateway(tmp_path_factory.mktemp("soft-down"), mock, extra_toml=rules)
    gw.start()
    try:
        assert _calls(gw, "gpt-4o", "gpt-4o", "gpt-4o") == ["ok", "ok", "ok"]
        wait_until(
            lambda: "soft-limit alert was not delivered" in gw.log.read_text(), "the failure"
        )
        assert "nobody-listens" not in gw.log.read_text()
    finally:
        gw.stop()
