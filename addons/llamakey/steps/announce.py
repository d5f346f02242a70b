"""Announce: one line per finished request for whoever runs the proxy, and a note in mitmweb's
comment column for what the flow itself cannot show.

The line is logged when the flow ends (answer, error, refused CONNECT), after every other step
has settled it, like mitmdump's own flow lines::

    [12:00:01.234][127.0.0.1:52114] alice openai gpt-4o-mini 200 12/34 tok $0.000123 456 ms
    [12:00:01.240][127.0.0.1:52115] - openai gpt-4o-mini 401 refused_by=unknown_master_key 0 ms

user, provider, model (as the provider reported it, else as asked), status, tokens in (cache
reads and writes included) / out, our cost, latency; the time and the client come from the log
format (mitmproxy's terminal log, mitmweb's event log). It names the user, never a key nor its
marker. Option `lmk_quiet` (`lmk serve --quiet`) turns the lines off.

In mitmweb a streamed answer passed through without being kept (mitmweb says "Content is
missing."): the comment says so, and a refusal's comment says which rule refused it.
"""

from __future__ import annotations

import logging
import time

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader
from mitmproxy.utils import human

from llamakey.flowstate import FlowState
from llamakey.refusals import Refusal
from llamakey.state import GatewayState
from llamakey.steps.guard import fail_closed

log = logging.getLogger(__name__)

_MAX_NAME = 80  # a model name from the client's body is cut to this in a line


def _word(text: str | None) -> str:
    """A value from the request (a model name) as one word: no spaces, no control characters,
    nothing that could start a line of its own in the log."""
    if not text:
        return "-"
    word = "".join(c if c.isprintable() and not c.isspace() else "?" for c in text)
    return word if len(word) <= _MAX_NAME else word[: _MAX_NAME - 3] + "..."


def _phrase(text: str) -> str:
    """An error message on one line: spaces kept, control characters (a newline) replaced."""
    return "".join(c if c.isprintable() else "?" for c in text)[:200]


def _usage_part(state: FlowState) -> str:
    usage = state.usage
    if usage is None or (usage.input_tokens is None and usage.output_tokens is None):
        return ""
    sent = (
        (usage.input_tokens or 0) + (usage.cache_read_tokens or 0) + (usage.cache_write_tokens or 0)
    )
    part = f" {sent}/{usage.output_tokens or 0} tok"
    if state.usage_estimated:
        part += " (estimated)"
    return part + (f" ${state.cost_usd:.6f}" if state.cost_usd is not None else " unpriced")


def request_line(flow: http.HTTPFlow, state: FlowState) -> str:
    """The line for a finished flow (see the module doc)."""
    usage = state.usage
    model = usage.model if usage is not None and usage.model else state.model
    response = flow.response
    status = str(response.status_code) if response is not None else "-"
    end = response.timestamp_end if response is not None and response.timestamp_end else None
    latency = ((end or time.time()) - flow.request.timestamp_start) * 1000
    parts = [
        state.user or "-",
        state.provider or _word(flow.request.pretty_host),
        _word(model),
        status,
    ]
    line = " ".join(parts)
    if state.refusal is not None:
        line += f" refused_by={state.refusal.value}"
    else:
        line += _usage_part(state)
    line += f" {max(latency, 0):.0f} ms"
    if len(state.attempts) > 1 or state.deployment is not None:  # routed (README "Model
        # catalogue and routing"): where it went, and what failed on the way
        tried = [str(a["deployment"]) for a in state.attempts[:-1]]
        line += f" via={_word(state.deployment or '-')}"
        line += f" after={','.join(_word(t) for t in tried)}" if tried else ""
    if state.cut is not None:
        line += " cut_by=budget_exceeded"
    elif state.client_disconnected:
        line += " client disconnected"
    elif flow.error is not None:
        line += f" error: {_phrase(flow.error.msg)}"
    return line


def _streamed(flow: http.HTTPFlow) -> bool:
    return flow.response is not None and callable(flow.response.stream)


def note(flow: http.HTTPFlow, state: FlowState) -> None:
    """Say in the flow's comment (mitmweb's comment column) what the flow cannot show."""
    if state.refusal is not None:
        comment = f"refused: {state.refusal.value}"
        if state.user:
            comment = f"{state.user} | {comment}"
        if flow.is_replay == "request" and state.refusal in (Refusal.UNKNOWN_KEY, Refusal.NO_KEY):
            comment += (
                " (a replay sends the recorded request, which holds a marker, not the key: "
                "put a master key in it first)"
            )
        elif flow.is_replay == "request" and state.refusal is Refusal.AUDIT_UNAVAILABLE:
            comment += (
                " (the audit log has this flow's row already: duplicate the flow and replay "
                "the copy)"
            )
        flow.comment = comment
    elif _streamed(flow):
        size = human.pretty_size(state.response_bytes)
        streamed = f"answer streamed to the client as it came ({size}); its body was not kept"
        if state.cut is not None:
            streamed += "; cut off by a budget (cut_by=budget_exceeded)"
        flow.comment = f"{flow.comment} | {streamed}" if flow.comment else streamed


class Announce:
    """Logs a line per finished request and notes in each flow what mitmweb cannot show."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.quiet = False

    def load(self, loader: Loader) -> None:
        # mitmdump's own entry point lets every record through the root logger; the embedded
        # masters of `lmk serve` and `lmk web` leave it at WARNING, which would swallow these
        # lines and the reload summary. Let ours through; termlog_verbosity still filters.
        package = logging.getLogger("llamakey")
        if package.getEffectiveLevel() > logging.INFO:
            package.setLevel(logging.INFO)
        loader.add_option(
            "lmk_quiet",
            bool,
            False,
            "Do not log a line per request (user, provider, model, status, tokens, cost).",
        )

    def configure(self, updated: set[str]) -> None:
        if "lmk_quiet" in updated:
            self.quiet = bool(ctx.options.lmk_quiet)

    def _finished(self, flow: http.HTTPFlow) -> None:
        state = self.state.flows.get(flow)
        if state is None:
            return  # not a provider flow nor a refusal: not ours to speak of
        note(flow, state)
        if not self.quiet:
            client = flow.client_conn.peername
            log.info("%s", request_line(flow, state), extra={"client": client} if client else {})

    @fail_closed
    def response(self, flow: http.HTTPFlow) -> None:
        self._finished(flow)

    @fail_closed
    def error(self, flow: http.HTTPFlow) -> None:
        self._finished(flow)

    @fail_closed
    def http_connect_error(self, flow: http.HTTPFlow) -> None:
        self._finished(flow)  # a CONNECT we refused (blocked host, proxy credentials)
