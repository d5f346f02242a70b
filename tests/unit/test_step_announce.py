"""Step: a line per finished request for whoever runs the proxy, and mitmweb's comment."""

from __future__ import annotations

import logging
import re

import pytest
from mitmproxy import flow as mflow
from mitmproxy import http
from mitmproxy.proxy.layers.http import _hooks as http_hooks

from llamakey.gateway import gateway_addons
from llamakey.steps.announce import Announce, request_line
from tests.unit.builders import (
    ALICE_KEY,
    REAL,
    STRANGER_KEY,
    basic,
    config_data,
    connect_flow,
    make_state,
    mitm_context,
    provider_flow,
)
from tests.unit.chain import CHAT, answer, chat_body, quiet_state, run_flow, stream_events

LINE = "llamakey.steps.announce"


def lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LINE]


async def test_a_finished_request_is_one_line_naming_who_what_and_how_much(
    caplog: pytest.LogCaptureFixture, isolated_log_scrubber: None
) -> None:
    state = quiet_state()
    with mitm_context(*gateway_addons(state)) as tctx, caplog.at_level(logging.INFO):
        f = provider_flow(CHAT, {"authorization": f"Bearer {ALICE_KEY}"}, content=chat_body())
        assert await run_flow(tctx, f, answer(input_tokens=12, output_tokens=34))
    (record,) = lines(caplog)
    cost = state.flows(f).cost_usd
    assert cost is not None and cost > 0
    message = record.getMessage()
    assert re.fullmatch(
        rf"alice openai gpt-4o-mini-2024-07-18 200 12/34 tok \${cost:.6f} \d+ ms", message
    ), message
    assert record.levelno == logging.INFO
    assert record.client == f.client_conn.peername  # type: ignore[attr-defined]  # shown as in mitmdump
    for secret in (ALICE_KEY, ALICE_KEY[-4:] + " (alice)", REAL["openai"]):
        assert secret not in caplog.text  # no key, not even its marker


async def test_a_refusal_names_the_rule(
    caplog: pytest.LogCaptureFixture, isolated_log_scrubber: None
) -> None:
    state = quiet_state()
    with mitm_context(*gateway_addons(state)) as tctx, caplog.at_level(logging.INFO):
        f = provider_flow(CHAT, {"authorization": f"Bearer {STRANGER_KEY}"}, content=chat_body())
        assert not await run_flow(tctx, f)
    (record,) = lines(caplog)
    assert re.fullmatch(r"- openai - 401 refused_by=unknown_master_key \d+ ms", record.getMessage())
    assert STRANGER_KEY not in caplog.text
    assert f.comment == "refused: unknown_master_key"


async def test_a_refused_connect_is_a_line_too(caplog: pytest.LogCaptureFixture) -> None:
    state = make_state(config_data(other_hosts="block"))
    with mitm_context(*gateway_addons(state)) as tctx, caplog.at_level(logging.INFO):
        c = connect_flow("example.com:443", {"Proxy-Authorization": basic("alice", ALICE_KEY)})
        await tctx.master.addons.trigger_event(http_hooks.HttpConnectHook(c))
        assert c.response is not None and c.response.status_code == 403
        await tctx.master.addons.trigger_event(http_hooks.HttpConnectErrorHook(c))
    (record,) = lines(caplog)
    assert re.fullmatch(r"- example\.com - 403 refused_by=blocked_host \d+ ms", record.getMessage())


async def test_a_broken_request_says_the_error(caplog: pytest.LogCaptureFixture) -> None:
    state = quiet_state()
    with mitm_context(*gateway_addons(state)) as tctx, caplog.at_level(logging.INFO):
        f = provider_flow(CHAT, {"authorization": f"Bearer {ALICE_KEY}"}, content=chat_body())
        f.client_conn.timestamp_end = None  # the client is still there
        assert await run_flow(tctx, f, error="Server disconnected.")
    (record,) = lines(caplog)
    assert re.fullmatch(
        r"alice openai gpt-4o-mini - \d+ ms error: Server disconnected\.", record.getMessage()
    ), record.getMessage()


async def test_what_the_client_sent_cannot_forge_a_line_or_show_a_key(
    caplog: pytest.LogCaptureFixture, isolated_log_scrubber: None
) -> None:
    state = quiet_state()
    model = f"gpt\n[12:00:00.000] bob openai gpt-4o 200 {ALICE_KEY}"
    with mitm_context(*gateway_addons(state)) as tctx, caplog.at_level(logging.INFO):
        f = provider_flow(CHAT, {"authorization": f"Bearer {ALICE_KEY}"}, content=chat_body(model))
        await run_flow(tctx, f, http.Response.make(200, b"{}", {"content-type": "text/plain"}))
    (record,) = lines(caplog)
    message = record.getMessage()
    assert "\n" not in message
    assert ALICE_KEY not in message


async def test_a_client_leaving_a_stream_is_said_with_the_estimate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = quiet_state()
    with mitm_context(*gateway_addons(state)) as tctx, caplog.at_level(logging.INFO):
        f = provider_flow(
            CHAT, {"authorization": f"Bearer {ALICE_KEY}"}, content=chat_body(stream=True)
        )
        trigger = tctx.master.addons.trigger_event
        await trigger(http_hooks.HttpRequestHeadersHook(f))
        await trigger(http_hooks.HttpRequestHook(f))
        f.response = http.Response.make(200, b"", {"content-type": "text/event-stream"})
        await trigger(http_hooks.HttpResponseHeadersHook(f))
        assert callable(f.response.stream)
        f.response.stream(stream_events()[0])
        f.error = mflow.Error("Client disconnected.")
        await trigger(http_hooks.HttpErrorHook(f))
    (record,) = lines(caplog)
    assert re.fullmatch(
        r"alice openai gpt-4o-mini 200 \d+/1 tok \(estimated\) \$\d\.\d{6} \d+ ms "
        "client disconnected",
        record.getMessage(),
    ), record.getMessage()


async def test_lmk_quiet_turns_the_lines_off_but_not_the_comment(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = quiet_state()
    addons = gateway_addons(state)
    announce = next(a for a in addons if isinstance(a, Announce))
    with mitm_context(*addons) as tctx, caplog.at_level(logging.INFO):
        tctx.configure(announce, lmk_quiet=True)
        f = provider_flow(CHAT, {"authorization": f"Bearer {STRANGER_KEY}"}, content=chat_body())
        await run_flow(tctx, f)
    assert lines(caplog) == []
    assert f.comment == "refused: unknown_master_key"


# mitmweb: a streamed answer says why its body is missing


async def test_a_streamed_answer_says_in_its_comment_that_its_body_was_not_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = quiet_state()
    with mitm_context(*gateway_addons(state)) as tctx, caplog.at_level(logging.INFO):
        f = provider_flow(
            CHAT, {"authorization": f"Bearer {ALICE_KEY}"}, content=chat_body(stream=True)
        )
        assert await run_flow(tctx, f, events=stream_events(input_tokens=5, output_tokens=7))
    assert f.response is not None and f.response.raw_content is None  # nothing re-buffered
    comment = f.comment
    assert comment.startswith("alice | gpt-4o-mini-2024-07-18 | 12 tokens | $")
    assert comment.endswith(
        f" | answer streamed to the client as it came ({state.flows(f).response_bytes}b); "
        "its body was not kept"
    )
    (record,) = lines(caplog)
    assert " 200 5/7 tok $" in record.getMessage()


async def test_a_whole_answer_keeps_the_comment_settle_gave_it() -> None:
    state = quiet_state()
    with mitm_context(*gateway_addons(state)) as tctx:
        f = provider_flow(CHAT, {"authorization": f"Bearer {ALICE_KEY}"}, content=chat_body())
        await run_flow(tctx, f, answer(input_tokens=1, output_tokens=2))
    assert re.fullmatch(r"alice \| gpt-4o-mini-2024-07-18 \| 3 tokens \| \$\d\.\d{6}", f.comment)


async def test_a_stream_a_budget_cut_off_says_so_in_its_line_and_comment() -> None:
    from llamakey.steps.announce import note, request_line

    state = quiet_state()
    f = provider_flow(CHAT, {"authorization": f"Bearer {ALICE_KEY}"}, content=chat_body())
    f.response = http.Response.make(200, b"", {"content-type": "text/event-stream"})
    f.response.stream = lambda data: data
    fs = state.flows(f)
    fs.provider, fs.user = "openai", "alice"
    fs.cut = "LlaMaKey: alice: $1.00 per day (defaults.budgets.0) is spent; resets …"
    f.error = mflow.Error("HTTP/1 protocol error: peer closed connection")
    assert request_line(f, fs).endswith(" cut_by=budget_exceeded")  # not the error we caused
    note(f, fs)
    assert f.comment.endswith("; cut off by a budget (cut_by=budget_exceeded)")


def test_a_routed_request_names_the_deployment_and_what_failed_before() -> None:
    state = make_state(config_data())
    f = provider_flow(CHAT, {"authorization": f"Bearer {ALICE_KEY}"}, content=chat_body())
    f.response = http.Response.make(200, b"{}")
    flow_state = state.flows(f)
    flow_state.user, flow_state.provider, flow_state.model = "alice", "openai", "fast"
    flow_state.deployment = "azure-east"
    flow_state.attempts = [
        {"deployment": "oai", "status": 503, "ms": 4.0},
        {"deployment": "azure-east", "status": 200, "ms": 9.0},
    ]
    line = request_line(f, flow_state)
    assert re.fullmatch(r"alice openai fast 200 \d+ ms via=azure-east after=oai", line)
    flow_state.attempts = flow_state.attempts[1:]
    assert request_line(f, flow_state).endswith(" ms via=azure-east")
