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

import hmac
import weakref
from datetime import UTC, datetime

from mitmproxy import connection, http

from llamakey import credentials
from llamakey import state as keys
from llamakey.config import User
from llamakey.providers import Carrier
from llamakey.refusals import Refusal, proxy_auth_required, refuse
from llamakey.state import GatewayState


class Authenticate:
    """Resolves each provider flow to a user, or answers 401 in the provider's shape."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        # Identity proven on a CONNECT, for the requests inside that tunnel (as proxyauth.py).
        self._by_connection: weakref.WeakKeyDictionary[connection.Client, tuple[str, str]] = (
            weakref.WeakKeyDictionary()
        )

    def lookup(self, key: str) -> User | None:
        """The user holding this master key, if any."""
        settings = self.state.settings
        if settings is None or not key.startswith(credentials.MASTER_PREFIX):
            return None
        digest = credentials.key_sha256(key)
        user = settings.users_by_hash.get(digest)
        if user is None or not hmac.compare_digest(user.key_sha256, digest):
            return None
        return user

    def http_connect(self, flow: http.HTTPFlow) -> None:
        # Taken off every CONNECT, even one already refused: mitmproxy prints CONNECT flows.
        header = flow.request.headers.pop("proxy-authorization", None)
        settings = self.state.settings
        if flow.response or settings is None:
            return
        presented = credentials.proxy_credentials(header)
        key = credentials.normalise(presented[1]) if presented else ""
        user = self.lookup(key) if key else None
        if user is not None:
            self._by_connection[flow.client_conn] = (
                user.key_sha256,
                credentials.marker(key, user.name),
            )
        elif settings.file.proxy.proxy_auth:
            reason = "wrong or unknown master key" if presented else "master key required"
            flow.metadata[keys.REFUSED] = Refusal.UNKNOWN_KEY.value
            flow.response = proxy_auth_required(
                f"LlaMaKey: {reason}: set HTTPS_PROXY=http://NAME:MASTER_KEY@host:port"
            )

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        resolved = self.state.provider_of(flow)
        if resolved is None or flow.response:
            return
        now = datetime.now(UTC)
        user, marker, carriers = self._identify(flow)
        flow.metadata[keys.CARRIERS] = [c.value for c in carriers]
        flow.metadata[keys.MARKER] = marker
        shape = resolved.provider.error_shape
        if user is None:
            refusal = Refusal.UNKNOWN_KEY if carriers else Refusal.NO_KEY
            message = (
                "the key is not a valid LlaMaKey master key (wrong, revoked or mistyped)"
                if carriers
                else "no master key: send your lmk_ key as the API key"
            )
        elif why := user.refusal(now):
            refusal = Refusal.DISABLED if why == "disabled" else Refusal.EXPIRED
            message = f"the master key of {user.name!r} is {why}"
        else:
            flow.metadata[keys.USER] = user.name
            flow.metadata[keys.GROUPS] = list(user.groups)
            return
        refuse(flow, shape, refusal, message)

    def _identify(self, flow: http.HTTPFlow) -> tuple[User | None, str, list[Carrier]]:
        """Find the master key; put a marker in place of every presented credential."""
        user: User | None = None
        marker = credentials.marker("", None)
        carriers: list[Carrier] = []
        for carrier, value in credentials.presented(flow.request):
            carriers.append(carrier)
            key = credentials.normalise(value)
            found = self.lookup(key)
            if found is not None and user is None:
                user = found
            if user is found or marker.endswith("(unknown)"):
                marker = credentials.marker(key, found.name if found else None)
            credentials.set_credential(flow.request, carrier, marker)
        if user is None and (proven := self._by_connection.get(flow.client_conn)):
            settings = self.state.settings
            user = settings.users_by_hash.get(proven[0]) if settings else None
            marker = proven[1]
            for carrier in carriers:
                credentials.set_credential(flow.request, carrier, marker)
        return user, marker, carriers
