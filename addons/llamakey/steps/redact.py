"""Redact: no real key and no master key leaves the proxy in logs, mitmweb or saved flows.

The headers themselves are handled where keys move (authenticate.py puts a marker in at
`requestheaders`, keyswap.py restores it at `responseheaders`/`error`). What stays open is the
window while a request is upstream: the flow then holds the real key, and mitmweb serves
flows in flight. So everything mitmweb sends (HTTP answers, flow dumps, websocket updates,
the event log) passes through the scrubber, and so does every log record.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from mitmproxy import http

from llamakey.state import GatewayState
from llamakey.steps.guard import fail_closed

_installed_for: list[GatewayState] = []


def install_log_scrubber(state: GatewayState) -> None:
    """Scrub every log record as it is made, whichever handler (terminal, mitmweb) shows it."""
    if _installed_for:
        _installed_for[0] = state
        return
    _installed_for.append(state)
    make_record: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

    def scrubbed_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call: leave it to logging's own error handling
            return record
        clean = _installed_for[0].scrubber.text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return record

    logging.setLogRecordFactory(scrubbed_record)


def install_web_scrubber(state: GatewayState) -> bool:
    """Make mitmweb scrub what it sends; False when mitmweb is not loaded in this process."""
    app = sys.modules.get("mitmproxy.tools.web.app")
    if app is None:
        return False
    if getattr(app.RequestHandler.write, "_lmk_scrubbed", False):
        return True
    write = app.RequestHandler.write
    dumps = app.WebSocketEventBroadcaster._json_dumps

    def scrubbed_write(self: Any, chunk: Any) -> None:
        if isinstance(chunk, list | dict):
            chunk = app.tornado.escape.json_encode(chunk)
            self.set_header("Content-Type", "application/json; charset=UTF-8")
        if isinstance(chunk, str):
            chunk = chunk.encode("utf-8", "surrogateescape")
        write(self, state.scrubber.same_length(chunk))

    def scrubbed_dumps(message: Any) -> bytes:
        clean: bytes = state.scrubber.same_length(dumps(message))
        return clean

    scrubbed_write._lmk_scrubbed = True  # type: ignore[attr-defined]
    app.RequestHandler.write = scrubbed_write
    app.WebSocketEventBroadcaster._json_dumps = staticmethod(scrubbed_dumps)
    return True


class Redact:
    """Installs the scrubbers and cleans what builtin addons leave in flow metadata."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def load(self, loader: object) -> None:
        install_log_scrubber(self.state)
        install_web_scrubber(self.state)

    def running(self) -> None:
        # mitmweb may be imported after our `load` (e.g. a script loaded by mitmdump first).
        install_log_scrubber(self.state)
        install_web_scrubber(self.state)

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        # mitmproxy's own proxyauth keeps the plain password (maybe a master key) in metadata,
        # which saved flows and mitmweb's flow download would carry.
        auth = flow.metadata.get("proxyauth")
        if auth:
            state = self.state.flows.get(flow)
            flow.metadata["proxyauth"] = (auth[0], (state and state.marker) or "[redacted]")
