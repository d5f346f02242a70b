"""Swap in the real provider key at the last moment, and take it out again at the first.

The real key goes in at `request` (the last hook before the request is written upstream)
and the redacted marker goes back at `responseheaders` or `error`, so saved flows, the
event log and finished flows in mitmweb never hold it. A real key that a provider echoes
back in an error body is scrubbed before the client sees it.
"""

from __future__ import annotations

from mitmproxy import http

from llamakey import credentials
from llamakey import state as keys
from llamakey.providers import Carrier
from llamakey.refusals import Refusal, refuse
from llamakey.state import GatewayState


class KeySwap:
    """Puts the real key where the provider expects it; restores the marker afterwards."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        # Flows currently holding a real key: flow id -> carrier it is in. Everything that
        # shows a flow consults this (see redact.py); `done` disarms what is still in flight.
        self.armed: dict[str, tuple[http.HTTPFlow, Carrier]] = {}

    def request(self, flow: http.HTTPFlow) -> None:
        resolved = self.state.provider_of(flow)
        if flow.response or resolved is None or keys.USER not in flow.metadata:
            return
        provider = resolved.provider
        if resolved.keyring is None:
            refuse(
                flow,
                provider.error_shape,
                Refusal.NO_PROVIDER_KEY,
                f"no real key for provider {provider.name!r}: {resolved.missing_key}",
            )
            return
        used = [Carrier(c) for c in flow.metadata.get(keys.CARRIERS, [])]
        accepted = [c for c in used if c in provider.carriers]
        carrier = accepted[0] if accepted else provider.default_carrier
        credentials.clear_credentials(flow.request, used)
        for header, value in resolved.extra_headers.items():
            flow.request.headers[header] = value
        credentials.set_credential(flow.request, carrier, resolved.keyring.next())
        self.armed[flow.id] = (flow, carrier)

    def disarm(self, flow: http.HTTPFlow) -> None:
        """Put the marker back in place of the real key."""
        entry = self.armed.pop(flow.id, None)
        if entry is not None:
            credentials.set_credential(flow.request, entry[1], flow.metadata[keys.MARKER])

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self.disarm(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        self.disarm(flow)
        body = flow.response.raw_content if flow.response else None
        if body and keys.PROVIDER in flow.metadata and self.state.scrubber.has_secret(body):
            assert flow.response is not None
            flow.response.raw_content = self.state.scrubber.same_length(body)

    def error(self, flow: http.HTTPFlow) -> None:
        self.disarm(flow)

    def done(self) -> None:
        # Runs before Save's `done`, which writes flows still in flight.
        for flow, _ in list(self.armed.values()):
            self.disarm(flow)
