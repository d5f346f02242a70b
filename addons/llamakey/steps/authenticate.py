"""Authenticate: the master key, wherever the client's SDK put its own key.

Accepted: ``Authorization: Bearer``, ``x-api-key``, ``api-key``, ``x-goog-api-key``, the
``?key=`` query, ``hf_``-prefixed keys, and proxy credentials on the CONNECT
(``HTTPS_PROXY=http://alice:KEY@host:port``). The lookup is one dict access by SHA-256 (no
scan over users) followed by a constant-time comparison.

Every credential the client sent is replaced by a redacted marker here, at
`requestheaders`, before mitmweb's View first sees the flow; the real key goes in later, at
`request`, in `KeySwap`.
"""

from __future__ import annotations

import weakref
from datetime import UTC, datetime

from mitmproxy import connection, http

from llamakey import credentials
from llamakey.config import User
from llamakey.flowstate import FlowState, mirror
from llamakey.providers import Carrier
from llamakey.refusals import Refusal, proxy_auth_required
from llamakey.state import GatewayState
from llamakey.steps.guard import fail_closed


class Authenticate:
    """Resolves each provider flow to a user, or answers 401 in the provider's shape."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        # Identity proven on a CONNECT, for the requests inside that tunnel (as proxyauth.py):
        # (stored key hash, marker).
        self._by_connection: weakref.WeakKeyDictionary[connection.Client, tuple[str, str]] = (
            weakref.WeakKeyDictionary()
        )

    def _proxy_user(self, header: str | None) -> tuple[User | None, str, Refusal, str]:
        """(user, marker, refusal, why) for the proxy credentials in `header`: the same checks
        as for a key in a request (known, not disabled, not expired)."""
        presented = credentials.proxy_credentials(header)
        if presented is None:
            return None, "", Refusal.NO_KEY, "master key required"
        key = credentials.normalise(presented[1])
        user = self.state.master_keys.find(key)
        if user is None:
            return None, "", Refusal.UNKNOWN_KEY, "wrong or unknown master key"
        if why := user.refusal(datetime.now(UTC)):
            refusal = Refusal.DISABLED if why == "disabled" else Refusal.EXPIRED
            return None, "", refusal, f"the master key of {user.name!r} is {why}"
        return user, credentials.marker(key, user.name), Refusal.NO_KEY, ""

    def _refuse_proxy(self, flow: http.HTTPFlow, refusal: Refusal, why: str) -> None:
        state = self.state.flows(flow)
        state.refusal = refusal
        mirror(flow, state)
        flow.response = proxy_auth_required(
            f"LlaMaKey: {why}: set HTTPS_PROXY=http://NAME:MASTER_KEY@host:port"
        )

    @fail_closed
    def http_connect(self, flow: http.HTTPFlow) -> None:
        # Taken off every CONNECT, even one already refused: mitmproxy prints CONNECT flows.
        header = flow.request.headers.pop("proxy-authorization", None)
        settings = self.state.settings
        if flow.response or settings is None:
            return
        user, marker, refusal, why = self._proxy_user(header)
        if user is not None:
            self._by_connection[flow.client_conn] = (user.key_sha256, marker)
        elif settings.file.proxy.proxy_auth:
            self._refuse_proxy(flow, refusal, why)

    def _plain_proxy_request(self, flow: http.HTTPFlow) -> None:
        """Plain-HTTP proxying (``GET http://host/`` with no CONNECT) proves itself per request."""
        header = flow.request.headers.pop("proxy-authorization", None)
        settings = self.state.settings
        if settings is None or not settings.file.proxy.proxy_auth or flow.response:
            return
        if flow.client_conn in self._by_connection:
            return
        user, _, refusal, why = self._proxy_user(header)
        if user is None:
            self._refuse_proxy(flow, refusal, why)

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if not flow.client_conn.tls:
            self._plain_proxy_request(flow)
        state = self.state.flows.provider_flow(flow)
        resolved = self.state.provider_of(state)
        if state is None or resolved is None:
            return
        now = datetime.now(UTC)
        user = self._identify(flow, state)
        shape = resolved.provider.error_shape
        if user is None:
            refusal = Refusal.UNKNOWN_KEY if state.carriers else Refusal.NO_KEY
            message = (
                "the key is not a valid LlaMaKey master key (wrong, revoked or mistyped)"
                if state.carriers
                else "no master key: send your lmk_ key as the API key"
            )
        elif why := user.refusal(now):
            refusal = Refusal.DISABLED if why == "disabled" else Refusal.EXPIRED
            message = f"the master key of {user.name!r} is {why}"
        else:
            state.user, state.groups, state.authenticated = user.name, user.groups, True
            mirror(flow, state)
            return
        state.refuse(flow, shape, refusal, message)

    def _identify(self, flow: http.HTTPFlow, state: FlowState) -> User | None:
        """Find the master key; put a marker in place of every presented credential."""
        user: User | None = None
        marker = credentials.marker("", None)
        carriers: list[Carrier] = []
        for carrier, value in credentials.presented(flow.request):
            carriers.append(carrier)
            key = credentials.normalise(value)
            found = self.state.master_keys.find(key)
            if found is not None and user is None:
                user = found
            if user is found or marker.endswith("(unknown)"):
                marker = credentials.marker(key, found.name if found else None)
            credentials.set_credential(flow.request, carrier, marker)
        if user is None and (proven := self._by_connection.get(flow.client_conn)):
            user = self.state.master_keys.by_hash(proven[0])
            marker = proven[1]
            for carrier in carriers:
                credentials.set_credential(flow.request, carrier, marker)
        state.carriers, state.marker = carriers, marker
        return user
