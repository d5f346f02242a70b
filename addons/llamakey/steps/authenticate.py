"""Authenticate: the master key or a bearer JWT, wherever the client's SDK put its own key.

Accepted: ``Authorization: Bearer``, ``x-api-key``, ``api-key``, ``x-goog-api-key``, the
``?key=`` query, ``hf_``-prefixed keys, and proxy credentials on the CONNECT
(``HTTPS_PROXY=http://alice:KEY@host:port``). The lookup is one dict access by SHA-256 (no
scan over users) followed by a constant-time comparison. With `[jwt]` configured, a value
shaped like a JWT in any of these places is verified instead (`identity.jwt`): from cached keys
on the spot (CPU only), or, when the identity provider's keys must be fetched first, by handing
back an awaitable that waits for the fetch on its thread, so no other flow waits.

Every credential the client sent is replaced by a redacted marker here, at
`requestheaders`, before mitmweb's View first sees the flow (and before any wait for keys);
the real key goes in later, at `request`, in `KeySwap`.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from mitmproxy import connection, http

from llamakey import credentials
from llamakey.flowstate import FlowState, mirror
from llamakey.identity import Outcome, refused
from llamakey.refusals import Refusal, proxy_auth_required
from llamakey.state import GatewayState
from llamakey.steps.guard import fail_closed

# What a tunnel proved on its CONNECT: ("key", the stored key hash) or ("jwt", the token,
# verified again for each request, so that it expires inside a long-lived tunnel too).
Proof = tuple[str, str]


def _then[T](
    found: Outcome | Awaitable[Outcome], finish: Callable[[Outcome], T]
) -> T | Awaitable[T]:
    """`finish(outcome)` now, or after the awaitable outcome (a JWT waiting for keys)."""
    if not inspect.isawaitable(found):
        return finish(found)

    async def later() -> T:
        return finish(await found)

    return later()


class Authenticate:
    """Resolves each provider flow to a user, or answers 401 in the provider's shape."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        # Identity proven on a CONNECT, for the requests inside that tunnel (as proxyauth.py):
        # (proof, marker).
        self._by_connection: weakref.WeakKeyDictionary[connection.Client, tuple[Proof, str]] = (
            weakref.WeakKeyDictionary()
        )

    def _key(self, key: str) -> Outcome:
        user = self.state.master_keys.find(key)
        if user is None:
            return refused(Refusal.UNKNOWN_KEY, "wrong or unknown master key")
        return Outcome(user=user)

    def _jwt(self, token: str) -> Outcome | Awaitable[Outcome]:
        jwts = self.state.jwt
        assert jwts is not None
        checked = jwts.check(token)
        return checked if checked is not None else jwts.check_after_fetch(token)

    def _is_jwt(self, value: str) -> bool:
        return self.state.jwt is not None and credentials.is_jwt_shaped(value)

    @staticmethod
    def _admitted(found: Outcome, now: datetime) -> Outcome:
        """`found`, or its refusal when its user is disabled or expired."""
        user = found.user
        if user is None or (why := user.refusal(now)) is None:
            return found
        refusal = Refusal.DISABLED if why == "disabled" else Refusal.EXPIRED
        what = "master key" if user.key_sha256 else "JWT identity"
        return refused(refusal, f"the {what} of {user.name!r} is {why}")

    def _proxy_identity(
        self, header: str | None
    ) -> tuple[Proof | None, Callable[[str | None], str], Outcome | Awaitable[Outcome]]:
        """What the proxy credentials in `header` prove (the same checks as for a key or token
        in a request: known, valid, not disabled, not expired): (the tunnel's proof, its
        marker for a user name, the outcome)."""
        presented = credentials.proxy_credentials(header)
        if presented is None:
            return None, credentials.jwt_marker, refused(Refusal.NO_KEY, "master key required")
        if self._is_jwt(presented[1]):
            return ("jwt", presented[1]), credentials.jwt_marker, self._jwt(presented[1])
        key = credentials.normalise(presented[1])
        return (
            ("key", credentials.key_sha256(key)),
            lambda name: credentials.marker(key, name),
            self._key(key),
        )

    def _refuse_proxy(self, flow: http.HTTPFlow, refusal: Refusal, why: str) -> None:
        state = self.state.flows(flow)
        state.refusal = refusal
        mirror(flow, state)
        flow.response = proxy_auth_required(
            f"LlaMaKey: {why}: set HTTPS_PROXY=http://NAME:MASTER_KEY@host:port"
        )

    @fail_closed
    def http_connect(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        # Taken off every CONNECT, even one already refused: mitmproxy prints CONNECT flows.
        header = flow.request.headers.pop("proxy-authorization", None)
        settings = self.state.settings
        if flow.response or settings is None:
            return None
        proof, marker, found = self._proxy_identity(header)

        def finish(outcome: Outcome) -> None:
            outcome = self._admitted(outcome, datetime.now(UTC))
            if outcome.user is not None and proof is not None:
                self._by_connection[flow.client_conn] = (proof, marker(outcome.user.name))
            elif self.state.settings is not None and self.state.settings.file.proxy.proxy_auth:
                self._refuse_proxy(flow, outcome.refusal or Refusal.NO_KEY, outcome.message)

        return _then(found, finish)

    def _plain_proxy_request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        """Plain-HTTP proxying (``GET http://host/`` with no CONNECT) proves itself per request."""
        header = flow.request.headers.pop("proxy-authorization", None)
        settings = self.state.settings
        if settings is None or not settings.file.proxy.proxy_auth or flow.response:
            return None
        if flow.client_conn in self._by_connection:
            return None
        _, _, found = self._proxy_identity(header)

        def finish(outcome: Outcome) -> None:
            outcome = self._admitted(outcome, datetime.now(UTC))
            if outcome.user is None:
                self._refuse_proxy(flow, outcome.refusal or Refusal.NO_KEY, outcome.message)

        return _then(found, finish)

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if not flow.client_conn.tls and (pending := self._plain_proxy_request(flow)):

            async def then_authenticate() -> None:
                await pending
                if (rest := self._authenticate(flow)) is not None:
                    await rest

            return then_authenticate()
        return self._authenticate(flow)

    def _authenticate(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        state = self.state.flows.provider_flow(flow)
        resolved = self.state.provider_of(state)
        if state is None or resolved is None:
            return None
        shape = resolved.provider.error_shape
        via_jwt, found = self._identify(flow, state)

        def finish(outcome: Outcome) -> None:
            outcome = self._admitted(outcome, datetime.now(UTC))
            user = outcome.user
            if via_jwt:  # the final marker names who the token proved to be
                state.marker = credentials.jwt_marker(user.name if user else None)
                for carrier in state.carriers:
                    credentials.set_credential(flow.request, carrier, state.marker)
            if user is None:
                state.refuse(flow, shape, outcome.refusal or Refusal.NO_KEY, outcome.message)
                return
            state.user, state.groups, state.authenticated = user.name, user.groups, True
            state.policy = outcome.policy
            mirror(flow, state)

        return _then(found, finish)

    def _identify(
        self, flow: http.HTTPFlow, state: FlowState
    ) -> tuple[bool, Outcome | Awaitable[Outcome]]:
        """Find the master key, else a JWT, else what the tunnel proved; put a marker in place
        of every presented credential. Returns (whether a JWT decides, what it proves)."""
        user = None
        token: str | None = None
        marker = credentials.marker("", None)
        carriers = []
        for carrier, value in credentials.presented(flow.request):
            carriers.append(carrier)
            if self._is_jwt(value):
                token = token or value
                credentials.set_credential(flow.request, carrier, credentials.jwt_marker(None))
                continue
            key = credentials.normalise(value)
            found = self.state.master_keys.find(key)
            if found is not None and user is None:
                user = found
            if user is found or marker.endswith("(unknown)"):
                marker = credentials.marker(key, found.name if found else None)
            credentials.set_credential(flow.request, carrier, marker)
        state.carriers, state.marker = carriers, marker
        if user is not None:  # a master key decides (a JWT beside it keeps its own marker)
            return False, Outcome(user=user)
        if token is not None:
            return True, self._jwt(token)
        if proven := self._by_connection.get(flow.client_conn):
            (kind, value), proven_marker = proven
            self._mark(flow, state, proven_marker)
            if kind == "jwt":
                return True, self._jwt(value)
            tunnel_user = self.state.master_keys.by_hash(value)
            if tunnel_user is not None:
                return False, Outcome(user=tunnel_user)
        if carriers:
            return False, refused(
                Refusal.UNKNOWN_KEY,
                "the key is not a valid LlaMaKey master key (wrong, revoked or mistyped)",
            )
        return False, refused(Refusal.NO_KEY, "no master key: send your lmk_ key as the API key")

    @staticmethod
    def _mark(flow: http.HTTPFlow, state: FlowState, marker: str) -> None:
        state.marker = marker
        for carrier in state.carriers:
            credentials.set_credential(flow.request, carrier, marker)
