"""Settle: turn the metered usage of a finished call into a cost in USD.

Prices come from genai-prices (offline), `[prices."MODEL"]` overrides win, and a cost the
provider reports itself is kept beside ours. An unknown model gets no cost (NULL, one warning),
never a silent 0. The result also shows in mitmweb's comment column.
"""

from __future__ import annotations

import gc

from genai_prices.data_snapshot import get_snapshot
from mitmproxy import http

from llamakey.flowstate import mirror
from llamakey.pricing import cost_usd
from llamakey.state import GatewayState
from llamakey.steps.guard import fail_closed

COST = "lmk.cost_usd"


class Settle:
    """Prices each metered flow once it ends (answered or broken off)."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def running(self) -> None:
        # Load genai-prices' tables now rather than on the first answer, then move everything
        # alive at start-up (those tables are tens of thousands of objects) out of the garbage
        # collector's sight: full collections otherwise walk them all, stalling the event loop
        # for milliseconds at a time.
        get_snapshot()
        gc.collect()
        gc.freeze()

    def settle(self, flow: http.HTTPFlow) -> None:
        state = self.state.flows.get(flow)
        if state is None or state.provider is None or state.usage is None:
            return
        usage = state.usage
        model = usage.model or state.upstream_model or state.model
        # Our own figure, from token counts: the provider's (xAI, OpenRouter, Perplexity) is
        # recorded beside it by the audit log, not in its place.
        cost = cost_usd(
            self.state.provider_entry(state), model, usage, overrides=self.state.price_overrides
        )
        state.cost_usd = float(cost) if cost is not None else None
        mirror(flow, state)
        tokens = (
            (usage.input_tokens or 0)
            + (usage.output_tokens or 0)
            + (usage.cache_read_tokens or 0)
            + (usage.cache_write_tokens or 0)
        )
        price = f"${cost:.6f}" if cost is not None else "unpriced"
        flow.comment = f"{state.user} | {model} | {tokens} tokens | {price}"

    @fail_closed
    def response(self, flow: http.HTTPFlow) -> None:
        self.settle(flow)

    @fail_closed
    def error(self, flow: http.HTTPFlow) -> None:
        self.settle(flow)
