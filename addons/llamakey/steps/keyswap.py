"""Swap in the real provider key at the last moment, and take it out again at the first.

The real key goes in at `request`, as the last step before the request is written upstream,
and only into a flow that every earlier step has cleared (authenticated, authorized, its audit
row committed) and that is addressed to a host of its own provider: a flow that skipped one,
however, is refused rather than sent. A routed flow gets no key here: the relay puts each
deployment's key into the request to that deployment only (`routing/relay.py`). The redacted
marker goes back at `responseheaders` or `error`, so saved flows, the event log and finished
flows in mitmweb never hold the key. (A real key that a provider echoes back is masked by the
redact step before the client sees it.)
"""

from __future__ import annotations

from mitmproxy import http

from llamakey import credentials
from llamakey.providers import Carrier
from llamakey.refusals import Refusal
from llamakey.state import GatewayState
from llamakey.steps.guard import fail_closed


class KeySwap:
    """Puts the real key where the provider expects it; restores the marker afterwards."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        # Flows currently holding a real key: flow id -> (flow, carrier the key is in, marker).
        # `done` disarms what is still in flight before Save writes it.
        self.armed: dict[str, tuple[http.HTTPFlow, Carrier, str]] = {}

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        state = self.state.flows.provider_flow(flow)
        resolved = self.state.provider_of(state)
        if state is None or resolved is None:
            return
        provider = resolved.provider
        if not state.cleared:
            state.refuse(
                flow,
                provider.error_shape,
                Refusal.NOT_CLEARED,
                "the request did not pass every check of this proxy and was not sent",
            )
            return
        if state.routed:
            # The relay puts each deployment's own key into the request to that deployment
            # (routing/relay.py); nothing of the client's or ours travels in this flow.
            credentials.clear_credentials(flow.request, state.carriers)
            return
        served = (
            self.state.settings.index.lookup(flow.request.host) if self.state.settings else None
        )
        if served is None or served.name != provider.name:
            # A key goes only to its own provider's host: whatever changed the request's
            # destination, the key does not follow it.
            state.refuse(
                flow,
                provider.error_shape,
                Refusal.MISDIRECTED,
                f"the request is addressed to {flow.request.host}, not to {provider.name}",
            )
            return
        if resolved.keyring is None:
            state.refuse(
                flow,
                provider.error_shape,
                Refusal.NO_PROVIDER_KEY,
                f"no real key for provider {provider.name!r}: {resolved.missing_key}",
            )
            return
        accepted = [c for c in state.carriers if c in provider.carriers]
        carrier = accepted[0] if accepted else provider.default_carrier
        credentials.clear_credentials(flow.request, state.carriers)
        for header, value in resolved.extra_headers.items():
            flow.request.headers[header] = value
        credentials.set_credential(flow.request, carrier, resolved.keyring.next())
        self.armed[flow.id] = (flow, carrier, state.marker)

    def disarm(self, flow: http.HTTPFlow) -> None:
        """Put the marker back in place of the real key."""
        entry = self.armed.pop(flow.id, None)
        if entry is not None:
            credentials.set_credential(flow.request, entry[1], entry[2])

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self.disarm(flow)

    @fail_closed
    def response(self, flow: http.HTTPFlow) -> None:
        self.disarm(flow)

    @fail_closed
    def error(self, flow: http.HTTPFlow) -> None:
        self.disarm(flow)

    def done(self) -> None:
        # Runs before Save's `done`, which writes flows still in flight.
        for flow, _, _ in list(self.armed.values()):
            self.disarm(flow)
