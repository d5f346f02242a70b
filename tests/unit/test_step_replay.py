"""Step: a replayed flow (mitmweb's Replay, `replay.client`) is a new request to every step.

mitmproxy replays by sending the same flow object again (backed up, response and error
cleared, `is_replay = "request"`); mitmweb's Duplicate makes a copy with a new id first. Either
way the replay must authenticate again and end with its own comment, not the first passage's.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy.test import taddons

from llamakey import flowstate
from llamakey.gateway import gateway_addons
from llamakey.state import GatewayState
from llamakey.steps.audit import AuditLog
from tests.harness import wait_until
from tests.unit.builders import ALICE_KEY, REAL, mitm_context, provider_flow, request_text
from tests.unit.chain import CHAT, answer, chat_body, quiet_state, run_flow


def replay(f: http.HTTPFlow) -> None:
    """What mitmproxy's ClientPlayback does to a flow before sending it again."""
    f.backup()  # type: ignore[no-untyped-call]
    f.is_replay = "request"
    f.response = None
    f.error = None
    f.request.timestamp_start = f.request.timestamp_end = time.time()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[taddons.context, GatewayState, Path]]:
    """Every addon of the gateway, with a real audit database."""
    db = tmp_path / "audit.db"
    state = quiet_state(enabled=True, path=str(db))
    addons = gateway_addons(state)
    audit_log = next(a for a in addons if isinstance(a, AuditLog))
    with mitm_context(*addons) as tctx:
        yield tctx, state, db
        audit_log.done()


def rows(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("select * from requests order by ts")]


async def finished_flow(tctx: taddons.context, state: GatewayState, db: Path) -> http.HTTPFlow:
    """alice's answered request, as mitmweb lists it afterwards."""
    f = provider_flow(CHAT, {"authorization": f"Bearer {ALICE_KEY}"}, content=chat_body())
    assert await run_flow(tctx, f, answer(input_tokens=1, output_tokens=2))
    assert f.comment.startswith("alice | gpt-4o-mini-2024-07-18 | 3 tokens | $")
    assert f.metadata[flowstate.USER] == "alice"
    wait_until(lambda: [r["completed_ts"] for r in rows(db)] != [None], "the first row")
    return f


async def test_a_replay_authenticates_again_and_the_recorded_marker_is_no_key(
    gateway: tuple[taddons.context, GatewayState, Path],
) -> None:
    tctx, state, db = gateway
    f = await finished_flow(tctx, state, db)
    first = state.flows(f)
    marker = f.request.headers["authorization"]
    assert ALICE_KEY not in marker and marker.endswith("(alice)")

    replay(f)
    assert not await run_flow(tctx, f)  # the marker authenticates no one: nothing upstream
    again = state.flows.get(f)
    assert again is not None and again is not first  # a fresh state, not the first passage's
    assert (again.user, again.authenticated) == (None, False)
    assert f.response is not None and f.response.status_code == 401
    assert flowstate.USER not in f.metadata  # the first passage's user is not shown for it
    assert f.comment.startswith("refused: unknown_master_key (a replay sends the recorded")
    assert "put a master key in it first" in f.comment
    assert REAL["openai"] not in request_text(f)


async def test_a_duplicate_replayed_with_the_key_put_back_passes_and_gets_a_fresh_comment(
    gateway: tuple[taddons.context, GatewayState, Path],
) -> None:
    tctx, state, db = gateway
    f = await finished_flow(tctx, state, db)
    copy = f.copy()  # type: ignore[no-untyped-call]  # mitmweb's Duplicate: a new flow id
    assert state.flows.get(copy) is None and copy.comment == f.comment  # the stale comment
    copy.request.headers["authorization"] = f"Bearer {ALICE_KEY}"  # edited in by hand
    replay(copy)
    assert await run_flow(tctx, copy, answer(input_tokens=5, output_tokens=6))
    fresh = state.flows(copy)
    assert (fresh.user, fresh.authenticated, fresh.refusal) == ("alice", True, None)
    assert copy.response is not None and copy.response.status_code == 200
    assert copy.comment.startswith("alice | gpt-4o-mini-2024-07-18 | 11 tokens | $")
    assert copy.comment != f.comment
    assert ALICE_KEY not in request_text(copy)  # the marker is back in its place
    wait_until(lambda: len(rows(db)) == 2 and rows(db)[1]["completed_ts"], "the copy's row")
    assert [r["id"] for r in rows(db)] == [f.id, copy.id]
    assert rows(db)[1]["input_tokens"] == 5


async def test_the_same_flow_replayed_with_the_key_put_back_is_authenticated_again(
    gateway: tuple[taddons.context, GatewayState, Path],
) -> None:
    tctx, state, db = gateway
    f = await finished_flow(tctx, state, db)
    f.request.headers["authorization"] = f"Bearer {ALICE_KEY}"
    replay(f)
    went_upstream = await run_flow(tctx, f, answer(input_tokens=5, output_tokens=6))
    again = state.flows(f)
    assert (again.user, again.authenticated) == ("alice", True)
    # The audit log has a row with this flow's id already, so the write-ahead row cannot be
    # written: the request is refused (nothing unaudited goes out), and the comment says why
    # and what to do instead.
    assert not went_upstream
    assert f.response is not None and f.response.status_code == 503
    assert f.comment.startswith("alice | refused: audit_unavailable (the audit log has this")
    assert "duplicate the flow and replay the copy" in f.comment
    assert len(rows(db)) == 1
