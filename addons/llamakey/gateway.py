"""The gateway: our addons in data-path order, around one shared state.

identify the provider -> authenticate -> swap in the real key -> stream and meter ->
settle usage and cost -> audit -> redact. The order is the order of the list; mitmproxy calls
each hook along it.
"""

from __future__ import annotations

from llamakey.state import GatewayState
from llamakey.steps.audit import Audit
from llamakey.steps.authenticate import Authenticate
from llamakey.steps.configload import ConfigLoader
from llamakey.steps.identify import IdentifyProvider
from llamakey.steps.keyswap import KeySwap
from llamakey.steps.meter import Meter
from llamakey.steps.redact import Redact
from llamakey.steps.settle import Settle


def gateway_addons(state: GatewayState | None = None) -> list[object]:
    """Fresh instances of every LlaMaKey addon, sharing one state."""
    state = state or GatewayState()
    return [
        ConfigLoader(state),
        IdentifyProvider(state),
        Authenticate(state),
        KeySwap(state),
        Meter(state),
        Settle(state),
        Audit(state),
        Redact(state),
    ]
