"""Identify the provider of each flow, and keep everything else out of the gateway's way.

TLS is intercepted for provider hosts only (`allow_hosts`, set from the configuration); any
other CONNECT is tunneled as raw bytes, or refused when `proxy.other_hosts = "block"`.
The provider is taken from the TLS server name the client asked for; a request whose Host
names another provider is refused, so one provider's key can never travel to another.
"""

from __future__ import annotations

import weakref

from mitmproxy import connection, http
from mitmproxy.proxy import server_hooks

from llamakey import usage
from llamakey.flowstate import mirror
from llamakey.providers import ErrorShape
from llamakey.refusals import Refusal
from llamakey.state import GatewayState
from llamakey.steps.guard import fail_closed


class IdentifyProvider:
    """Names the provider of each flow and what the request asks of it (API, model, stream);
    redirects provider connections per `connect_to`."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self._dialed: weakref.WeakKeyDictionary[connection.Server, tuple[str, int]] = (
            weakref.WeakKeyDictionary()
        )

    def _blocking(self) -> bool:
        settings = self.state.settings
        return settings is not None and settings.file.proxy.other_hosts == "block"

    @fail_closed
    def http_connect(self, flow: http.HTTPFlow) -> None:
        settings = self.state.settings
        if flow.response or settings is None:
            return
        if self._blocking() and settings.index.lookup(flow.request.host) is None:
            state = self.state.flows(flow)
            state.refusal = Refusal.BLOCKED_HOST
            mirror(flow, state)
            flow.response = http.Response.make(
                403,
                f"LlaMaKey: {flow.request.host} is not an LLM provider this proxy serves",
                {"content-type": "text/plain"},
            )

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        """Dial `connect_to` instead of the provider (like curl --connect-to): SNI and Host stay."""
        settings = self.state.settings
        server: connection.Server = data.server
        if settings is None or server.address is None:
            return
        provider = settings.index.lookup(server.sni or server.address[0])
        if provider is not None:
            target = settings.providers[provider.name].connect_to
            if target is not None:
                self._dialed[server] = server.address
                server.address = target

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        # Once dialed, the connection names the provider again (`peername` keeps the address
        # really dialed). mitmproxy copies the server address into the certificate it forges,
        # and an IP there breaks our CA's name constraints; its HTTP layer also reuses a
        # connection only when the address matches the request's host. mitmproxy refuses to
        # *redirect* an open connection; restoring its logical name is not a redirect.
        if original := self._dialed.pop(data.server, None):
            object.__setattr__(data.server, "address", original)

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        settings = self.state.settings
        if flow.response or settings is None:
            return
        target = _target(flow)
        provider = settings.index.lookup(target[0])
        if _head_size(flow.request) > settings.file.limits.max_header_kb * 1024:
            state = self.state.flows(flow)
            state.provider = provider.name if provider else None
            state.refuse(
                flow,
                provider.error_shape if provider else ErrorShape.OPENAI,
                Refusal.HEADERS_TOO_LARGE,
                f"the request's target and headers are larger than this proxy accepts "
                f"({settings.file.limits.max_header_kb} KB, limits.max_header_kb)",
            )
            return
        if provider is None:
            if self._blocking():
                self.state.flows(flow).refuse(
                    flow,
                    ErrorShape.OPENAI,
                    Refusal.BLOCKED_HOST,
                    f"{target[0]} is not an LLM provider this proxy serves",
                )
            return
        state = self.state.flows(flow)
        state.provider = provider.name
        mirror(flow, state)
        if stray := _other_names(flow, target):
            state.refuse(
                flow,
                provider.error_shape,
                Refusal.MISDIRECTED,
                f"this connection is to {target[0]}:{target[1]}, but the request names "
                f"{', '.join(sorted(stray))}",
            )
        elif flow.request.scheme != "https":
            state.refuse(
                flow,
                provider.error_shape,
                Refusal.NOT_HTTPS,
                f"use https://{target[0]}: keys never travel in plain HTTP",
            )
        elif (size := _declared_size(flow)) is not None and size > self._max_request_bytes():
            self._refuse_too_large(flow, provider.error_shape)

    def _max_request_bytes(self) -> int:
        settings = self.state.settings
        return int(settings.file.limits.max_request_mb * 2**20) if settings else 0

    def _refuse_too_large(self, flow: http.HTTPFlow, shape: ErrorShape) -> None:
        limit = self.state.settings.file.limits.max_request_mb if self.state.settings else 0
        self.state.flows(flow).refuse(
            flow,
            shape,
            Refusal.TOO_LARGE,
            f"the request body is larger than this proxy accepts "
            f"({limit:g} MB, limits.max_request_mb)",
        )

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        """With the body read: which API, which model, streamed or not (the rules and the
        audit row need them before anything goes upstream)."""
        state = self.state.flows.provider_flow(flow)
        if state is None or state.provider is None:
            return
        request = flow.request
        body = request.raw_content or b""
        provider = self.state.provider_entry(state)
        if len(body) > self._max_request_bytes():  # chunked, with no size said up front
            self._refuse_too_large(flow, provider.error_shape)
            return
        state.flavor = usage.api_flavor(provider, request.method, request.path)
        state.model = usage.request_model(state.flavor, request.path, body)
        state.stream = usage.is_stream_request(state.flavor, request.path, body)


def _normal(host: str) -> str:
    return host.lower().rstrip(".")


def _target(flow: http.HTTPFlow) -> tuple[str, int]:
    """Where this request's connection goes: the CONNECT target of its tunnel, else (plain
    proxying, no tunnel) the host the request itself names."""
    address = flow.server_conn.address
    if address is not None:
        return _normal(address[0]), address[1]
    return _normal(flow.request.host), flow.request.port


def _other_names(flow: http.HTTPFlow, target: tuple[str, int]) -> list[str]:
    """Every name the request carries (TLS server name, Host or :authority, an absolute-form
    target) that is not the connection's own host and port: one rule for where a key goes."""
    request = flow.request
    stray: list[str] = []
    names = [("request target", request.host, request.port)]
    if flow.client_conn.sni:
        names.append(("TLS server name", flow.client_conn.sni, target[1]))
    # Inside a tunnel mitmproxy sets `request.host` to the CONNECT target, so the name an
    # absolute-form target (or h2's :authority) carries is only in `request.authority`.
    for what, authority in (("request target", request.authority), ("Host", request.host_header)):
        if not authority:
            continue
        host, port = _split_authority(authority)
        names.append((what, host, port if port is not None else target[1]))
    for what, host, port in names:
        if _normal(host) != target[0] or port != target[1]:
            stray.append(f"{what} {host!r}" + (f" port {port}" if port != target[1] else ""))
    return stray


def _declared_size(flow: http.HTTPFlow) -> int | None:
    length = flow.request.headers.get("content-length", "")
    return int(length) if length.isdigit() else None


def _split_authority(authority: str) -> tuple[str, int | None]:
    """(host, port) of ``host``, ``host:port`` or ``[v6]:port``; an unparsable authority is
    returned whole as the host, so it can only ever differ from the connection's."""
    host, sep, port = authority.rpartition(":")
    if (
        sep
        and port.isdigit()
        and "]" not in port
        and (not host.startswith("[") or host.endswith("]"))
    ):
        return host.strip("[]"), int(port)
    if authority.startswith("[") and authority.endswith("]"):
        return authority[1:-1], None
    return authority, None


def _head_size(request: http.Request) -> int:
    """Bytes of the request target and header fields, about as they were on the wire."""
    return len(request.data.path) + sum(len(n) + len(v) + 4 for n, v in request.headers.fields)
