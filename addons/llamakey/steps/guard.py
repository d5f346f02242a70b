"""Fail closed: an exception in any step's hook ends in a refusal, never in a forward.

mitmproxy catches an exception raised by an addon's hook, logs it and carries on with the
flow, so a step that fails before it has done its work (identified the provider, replaced the
master key, written the audit row) would let the request go on without that work done. Every
flow hook of every step is wrapped by `fail_closed`: while the client has seen nothing yet
(CONNECT, request headers, request, response headers) the flow is answered with a 500 in the
provider's error shape naming `internal_error`, which the audit log records; afterwards (the
answer is already on its way) the failure is logged and the audit row completed as usual.
The key swap adds a second line: it puts a real key only into a flow whose state says every
earlier step cleared it.
"""

from __future__ import annotations

import functools
import inspect
import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

from mitmproxy import http

from llamakey.flowstate import mirror
from llamakey.providers import ErrorShape
from llamakey.refusals import Refusal, refusal_response
from llamakey.state import GatewayState

log = logging.getLogger(__name__)

# Hooks at which the client has not yet received anything: a refusal can still replace it all.
BEFORE_ANSWER = frozenset({"http_connect", "requestheaders", "request", "responseheaders"})


class Step(Protocol):
    state: GatewayState


def refuse_after_error(state: GatewayState, flow: http.HTTPFlow, hook: str) -> None:
    """Answer `flow` with a 500 `internal_error` in its provider's shape."""
    flow_state = state.flows(flow)
    resolved = state.provider_of(flow_state)
    shape = resolved.provider.error_shape if resolved else ErrorShape.OPENAI
    flow_state.refusal = Refusal.INTERNAL_ERROR
    flow_state.authorized = flow_state.audited = False  # nothing more may be added to it
    if hook == "http_connect":
        flow.response = http.Response.make(
            500, b"LlaMaKey: internal error; the tunnel was not opened", {}
        )
    else:
        flow.response = refusal_response(
            shape, Refusal.INTERNAL_ERROR, "internal error in the proxy; the request was not sent"
        )
    mirror(flow, flow_state)


def _handle(step: Step, flow: http.HTTPFlow, hook: str) -> None:
    name = type(step).__name__
    # The exception's text may quote request data (keys among it): the traceback is formatted
    # here and scrubbed, since a log record's exc_info is formatted after any filter ran.
    log.error(
        "LlaMaKey step %s.%s failed on %s; the flow is refused:\n%s",
        name,
        hook,
        flow.request.pretty_url,
        step.state.scrubber.text(traceback.format_exc()),
    )
    if hook == "websocket_message":  # the message may hold a secret: it must not pass
        flow.kill()  # type: ignore[no-untyped-call]
    elif hook in BEFORE_ANSWER and flow.live:
        try:
            refuse_after_error(step.state, flow, hook)
        except Exception:  # the refusal itself failed: kill the flow rather than forward it
            log.error("LlaMaKey could not refuse the flow; killing it")
            flow.kill()  # type: ignore[no-untyped-call]


def fail_closed[F: Callable[..., Any]](hook: F) -> F:
    """Wrap a step's flow hook so that an exception refuses the flow (see the module doc).

    The guarded function calls ``guarded.__wrapped__`` at each call, so a test can replace the
    body of any hook with one that raises.
    """
    name = hook.__name__
    if inspect.iscoroutinefunction(hook):

        @functools.wraps(hook)
        async def guarded_async(self: Step, flow: http.HTTPFlow) -> None:
            try:
                await guarded_async.__wrapped__(self, flow)
            except Exception:
                _handle(self, flow, name)

        return cast(F, guarded_async)

    @functools.wraps(hook)
    def guarded(self: Step, flow: http.HTTPFlow) -> Awaitable[None] | None:
        # A synchronous hook may hand back an awaitable for the rare flow that needs one
        # (onboarding): its failures are caught when it is awaited.
        try:
            result = guarded.__wrapped__(self, flow)
        except Exception:
            _handle(self, flow, name)
            return None
        if result is not None and inspect.isawaitable(result):
            return _awaited(self, flow, result, name)
        return None

    return cast(F, guarded)


async def _awaited(step: Step, flow: http.HTTPFlow, pending: Awaitable[object], hook: str) -> None:
    try:
        await pending
    except Exception:
        _handle(step, flow, hook)
