"""Driving one flow through every addon of the gateway, in mitmproxy's hook order, with a
provider's answer (whole or streamed) standing in for upstream."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mitmproxy import flow as mflow
from mitmproxy import http
from mitmproxy.proxy.layers.http import _hooks as http_hooks
from mitmproxy.test import taddons

from llamakey import config
from llamakey.state import GatewayState
from tests.unit.builders import config_data

CHAT = "https://api.openai.com/v1/chat/completions"


def chat_body(model: str = "gpt-4o-mini", *, stream: bool = False) -> bytes:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def answer(input_tokens: int = 12, output_tokens: int = 34) -> http.Response:
    """A whole chat completion from the provider, with its usage."""
    body = {
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"message": {"role": "assistant", "content": "hello"}}],
        "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens},
    }
    return http.Response.make(200, json.dumps(body), {"content-type": "application/json"})


def stream_events(input_tokens: int = 12, output_tokens: int = 34) -> list[bytes]:
    """A streamed chat completion's events, its usage in the last (as asked upstream)."""
    usage = {"prompt_tokens": input_tokens, "completion_tokens": output_tokens}
    events: list[dict[str, Any]] = [
        {"model": "gpt-4o-mini-2024-07-18", "choices": [{"delta": {"content": "hel"}}]},
        {"model": "gpt-4o-mini-2024-07-18", "choices": [{"delta": {"content": "lo"}}]},
        {"model": "gpt-4o-mini-2024-07-18", "choices": [], "usage": usage},
    ]
    return [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]


def quiet_state(**audit: object) -> GatewayState:
    """The unit tests' configuration; auditing off unless `audit` says otherwise."""
    data = config_data()
    data["audit"] = {"enabled": False, **audit}
    state = GatewayState()
    state.install(config.resolve(config.parse(data), None))
    return state


async def run_flow(
    tctx: taddons.context,
    f: http.HTTPFlow,
    response: http.Response | None = None,
    *,
    events: Sequence[bytes] | None = None,
    error: str | None = None,
) -> bool:
    """Trigger every hook of `f` as mitmproxy does; True if the request went "upstream".

    Upstream answers `response` (a whole answer), or the `events` of a stream, or fails with
    `error`. A flow a step answered itself gets its `response` hook directly.
    """
    trigger = tctx.master.addons.trigger_event
    await trigger(http_hooks.HttpRequestHeadersHook(f))
    await trigger(http_hooks.HttpRequestHook(f))
    if f.response is not None:  # answered by the gateway: nothing goes upstream
        await trigger(http_hooks.HttpResponseHook(f))
        return False
    if error is not None:
        f.error = mflow.Error(error)
        await trigger(http_hooks.HttpErrorHook(f))
        return True
    if events is not None:
        f.response = http.Response.make(200, b"", {"content-type": "text/event-stream"})
        del f.response.headers["content-length"]
        await trigger(http_hooks.HttpResponseHeadersHook(f))
        tap = f.response.stream
        assert callable(tap), "a stream must pass through, not be kept"
        for event in [*events, b""]:
            tap(event)
        f.response.data.content = None  # as mitmproxy leaves a streamed answer: not kept
        await trigger(http_hooks.HttpResponseHook(f))
        return True
    f.response = response or answer()
    await trigger(http_hooks.HttpResponseHeadersHook(f))
    await trigger(http_hooks.HttpResponseHook(f))
    return True
