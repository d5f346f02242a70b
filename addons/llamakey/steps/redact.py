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
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

from mitmproxy import http

from llamakey.scrub import Scrubber
from llamakey.state import GatewayState
from llamakey.steps.guard import fail_closed


class Scrubbing(Protocol):
    """Whose scrubber the log records pass through: the gateway's state, the sidecar's."""

    @property
    def scrubber(self) -> Scrubber: ...


_installed_for: list[Scrubbing] = []


def install_log_scrubber(state: Scrubbing) -> None:
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


def scrub_headers(headers: http.Headers, scrubber: Scrubber) -> None:
    """Mask every secret in these headers, whichever header holds it (folded, tabbed, custom)."""
    fields = headers.fields
    # One search over all values (a NUL joins them: no header holds one, no key spans it).
    if not scrubber.has_secret(b"\0".join(value for _, value in fields)):
        return
    headers.fields = tuple((name, scrubber.same_length(value)) for name, value in fields)


def scrub_target(request: http.Request, scrubber: Scrubber) -> None:
    """Mask secrets in the request target, percent-encoded ones included (``?%6bey=lmk_...``,
    ``%6c%6d%6b_...``)."""
    raw = request.data.path
    if scrubber.has_secret(raw):
        request.data.path = scrubber.same_length(raw)
    elif b"%" in raw and scrubber.has_secret(unquote_to_bytes(raw)):
        request.data.path = scrubber.same_length(unquote_to_bytes(raw))


def _encoded(headers: http.Headers) -> bool:
    """True when the message says it is content-encoded (a scan of the raw fields is cheaper
    than a header lookup, and this runs for every message)."""
    return any(
        name.lower() == b"content-encoding" and value.strip().lower() != b"identity"
        for name, value in headers.fields
    )


def scrub_body(message: http.Message, scrubber: Scrubber) -> None:
    """Mask secrets in a kept body, decoded first when it is compressed."""
    raw = message.raw_content
    if not raw:
        return
    if scrubber.has_secret(raw):
        message.raw_content = scrubber.same_length(raw)
    elif _encoded(message.headers):
        decoded = message.get_content(strict=False)
        if decoded and scrubber.has_secret(decoded):
            message.content = scrubber.same_length(decoded)


class Redact:
    """Installs the scrubbers, and masks every secret left in a flow before anything after our
    steps (mitmweb's view, saved flows, the event log) sees it.

    Runs last among the steps, on every flow, refused or not: a master key anywhere in a
    request (any header, the target, the body) is masked before it could go upstream or be
    shown, and a real key echoed back in response headers or a kept response body is masked
    before the client or anyone else sees it. Request headers are never touched between
    `request` and `responseheaders`, while the key swap has the real key in them.
    """

    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def load(self, loader: object) -> None:
        install_log_scrubber(self.state)
        install_web_scrubber(self.state)

    def running(self) -> None:
        # mitmweb may be imported after our `load` (e.g. a script loaded by mitmdump first).
        install_log_scrubber(self.state)
        install_web_scrubber(self.state)

    def _scrub_request_head(self, flow: http.HTTPFlow) -> None:
        scrubber = self.state.scrubber
        scrub_headers(flow.request.headers, scrubber)
        scrub_target(flow.request, scrubber)
        # mitmproxy's own proxyauth keeps the plain password (maybe a master key) in metadata,
        # which saved flows and mitmweb's flow download would carry.
        auth = flow.metadata.get("proxyauth")
        if auth:
            state = self.state.flows.get(flow)
            flow.metadata["proxyauth"] = (auth[0], (state and state.marker) or "[redacted]")

    @fail_closed
    def http_connect(self, flow: http.HTTPFlow) -> None:
        self._scrub_request_head(flow)

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._scrub_request_head(flow)

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        scrub_body(flow.request, self.state.scrubber)

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        scrub_headers(flow.response.headers, self.state.scrubber)

    @fail_closed
    def response(self, flow: http.HTTPFlow) -> None:
        # The answer's kept body (its headers were masked at `responseheaders`).
        if flow.response is not None:
            scrub_body(flow.response, self.state.scrubber)

    @fail_closed
    def error(self, flow: http.HTTPFlow) -> None:
        self._scrub_request_head(flow)
        if flow.response is not None:
            scrub_headers(flow.response.headers, self.state.scrubber)
            scrub_body(flow.response, self.state.scrubber)

    @fail_closed
    def websocket_message(self, flow: http.HTTPFlow) -> None:
        # Both directions: a master key a client sends never reaches the provider, a real key a
        # provider sends never reaches the client (mitmproxy hands us whole messages).
        assert flow.websocket is not None
        message = flow.websocket.messages[-1]
        if self.state.scrubber.has_secret(message.content):
            message.content = self.state.scrubber.same_length(message.content)
