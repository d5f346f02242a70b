"""Fail closed: whichever step's hook raises, the request is refused and audited, never sent.

The whole chain of steps runs on one flow in mitmproxy's hook order, with a real audit
database; one hook at a time is made to raise.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http

from llamakey import config
from llamakey.gateway import gateway_addons
from llamakey.refusals import Refusal
from llamakey.state import GatewayState
from llamakey.steps.audit import AuditLog
from llamakey.steps.guard import BEFORE_ANSWER
from tests.harness import wait_until
from tests.unit.builders import (
    ALICE_KEY,
    REAL,
    config_data,
    mitm_context,
    provider_flow,
    request_text,
)

FLOW_HOOKS = ("requestheaders", "request", "responseheaders", "response")


def guarded_hooks() -> Iterator[tuple[str, str]]:
    """(step class, hook) for every guarded flow hook of the gateway's steps."""
    for step in gateway_addons():
        for hook in FLOW_HOOKS:
            method = getattr(type(step), hook, None)
            if method is not None and hasattr(method, "__wrapped__"):
                yield type(step).__name__, hook


def test_every_flow_hook_of_every_step_is_guarded() -> None:
    unguarded = [
        f"{type(step).__name__}.{hook}"
        for step in gateway_addons()
        if type(step).__name__ not in ("ConfigLoader", "AuditLog")
        for hook in (*FLOW_HOOKS, "http_connect", "error")
        if (method := getattr(type(step), hook, None)) is not None
        and not hasattr(method, "__wrapped__")
    ]
    assert unguarded == []


async def run_chain(steps: list[Any], f: http.HTTPFlow) -> bool:
    """Drive `f` through the steps as mitmproxy would; True if it went "upstream"."""

    async def call(hook: str) -> None:
        for step in steps:
            method = getattr(step, hook, None)
            if method is not None:
                result = method(f)
                if hasattr(result, "__await__"):
                    await result

    await call("requestheaders")
    await call("request")
    went_upstream = f.response is None
    if went_upstream:
        assert REAL["openai"] in request_text(f)  # what the provider would get
        f.response = http.Response.make(200, b'{"usage": {}}', {"content-type": "application/json"})
    await call("responseheaders")
    await call("response")
    return went_upstream


def audit_rows(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("select * from requests")]


@pytest.mark.parametrize(("step_name", "hook"), list(guarded_hooks()))
async def test_a_raising_hook_refuses_and_audits_the_request(
    step_name: str,
    hook: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    isolated_log_scrubber: None,
) -> None:
    data = config_data()
    data["audit"] = {"path": str(tmp_path / "audit.db")}
    state = GatewayState()
    state.install(config.resolve(config.parse(data), None))
    steps = [s for s in gateway_addons(state) if type(s).__name__ != "ConfigLoader"]
    target = next(s for s in steps if type(s).__name__ == step_name)

    def boom(self: object, flow: http.HTTPFlow) -> None:
        raise RuntimeError(f"injected failure with {ALICE_KEY}")

    monkeypatch.setattr(getattr(type(target), hook), "__wrapped__", boom)
    audit_log = next(s for s in steps if isinstance(s, AuditLog))
    with mitm_context(*steps):
        audit_log.running()
        f = provider_flow(
            "https://api.openai.com/v1/chat/completions",
            {"authorization": f"Bearer {ALICE_KEY}"},
            content=b'{"model": "gpt-4o-mini", "messages": []}',
        )
        went_upstream = await run_chain(steps, f)
        db = tmp_path / "audit.db"
        if step_name != "CompleteAudit":
            wait_until(lambda: audit_rows(db) and audit_rows(db)[0]["completed_ts"], "the row")
        audit_log.done()
    shown = request_text(f)  # what a saved flow or mitmweb shows
    assert ALICE_KEY not in shown and REAL["openai"] not in shown
    assert f"{step_name}.{hook} failed" in caplog.text
    assert ALICE_KEY not in caplog.text
    [row] = audit_rows(tmp_path / "audit.db")
    if step_name == "CompleteAudit":  # nothing else completes a row: it stays begun, visibly
        assert went_upstream and row["completed_ts"] is None
        return
    assert f.response is not None
    if hook in ("requestheaders", "request"):
        assert not went_upstream, f"{step_name}.{hook} raised and the request went upstream"
    if hook in BEFORE_ANSWER:  # the client gets a refusal, and the row says why
        assert f.response.status_code == 500
        assert f.response.json()["error"]["code"] == Refusal.INTERNAL_ERROR.value
        assert (row["status"], row["refused_by"]) == (500, Refusal.INTERNAL_ERROR.value)
    else:  # the answer was on its way: it completes, and the row with it
        assert went_upstream
        assert f.response.status_code == 200
        assert row["status"] == 200
