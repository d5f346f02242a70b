"""The gateway: our addons in data-path order, around one shared state.

identify the provider -> authenticate -> swap in the real key -> stream and meter ->
settle usage and cost -> audit -> redact. The order is the order of the list; mitmproxy calls
each hook along it.
"""

from __future__ import annotations

from llamakey.audit import Audit
from llamakey.authenticate import Authenticate
from llamakey.configload import ConfigLoader
from llamakey.identify import IdentifyProvider
from llamakey.keyswap import KeySwap
from llamakey.meter import Meter
from llamakey.redact import Redact
from llamakey.settle import Settle
from llamakey.state import GatewayState


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
