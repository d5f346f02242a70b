"""Authorize: the rules an authenticated request must pass before anything is written ahead or
sent upstream (endpoint and model allow-lists, rate limits, budgets).

No rule exists yet: every authenticated request is authorized. The step is here so that the
gate is in place, in its place on the data path (after authenticate, before the write-ahead
row and the key swap); the key swap refuses any flow this step has not cleared.
"""

from __future__ import annotations

from mitmproxy import http

from llamakey.state import GatewayState
from llamakey.steps.guard import fail_closed


class Authorize:
    """Clears authenticated provider flows against the configured rules (none yet)."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        state = self.state.flows.provider_flow(flow)
        if state is None or not state.authenticated:
            return
        state.authorized = True
