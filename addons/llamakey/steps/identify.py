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

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        settings = self.state.settings
        if flow.response or settings is None:
            return
        by_host = settings.index.lookup(flow.request.pretty_host)
        sni = flow.client_conn.sni
        by_sni = settings.index.lookup(sni) if sni else by_host
        provider = by_sni or by_host
        if provider is None:
            if self._blocking():
                self.state.flows(flow).refuse(
                    flow,
                    ErrorShape.OPENAI,
                    Refusal.BLOCKED_HOST,
                    f"{flow.request.pretty_host} is not an LLM provider this proxy serves",
                )
            return
        state = self.state.flows(flow)
        state.provider = provider.name
        mirror(flow, state)
        if by_sni is not by_host:
            state.refuse(
                flow,
                provider.error_shape,
                Refusal.MISDIRECTED,
                f"Host {flow.request.pretty_host!r} does not match the TLS server name {sni!r}",
            )
        elif flow.request.scheme != "https":
            state.refuse(
                flow,
                provider.error_shape,
                Refusal.NOT_HTTPS,
                f"use https://{flow.request.pretty_host}: keys never travel in plain HTTP",
            )

    def request(self, flow: http.HTTPFlow) -> None:
        """With the body read: which API, which model, streamed or not (the rules and the
        audit row need them before anything goes upstream)."""
        state = self.state.flows.provider_flow(flow)
        if state is None or state.provider is None:
            return
        request = flow.request
        body = request.raw_content or b""
        state.flavor = usage.api_flavor(state.provider, request.method, request.path)
        state.model = usage.request_model(state.flavor, request.path, body)
        state.stream = usage.is_stream_request(state.flavor, request.path, body)
