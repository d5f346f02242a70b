"""The gateway: our addons in data-path order, around one shared state.

(a replay starts over) -> identify the provider -> authenticate -> authorize -> write the audit
row ahead -> swap in the real key -> (upstream) -> stream and meter -> settle usage and cost ->
complete the audit row -> redact -> announce. mitmproxy calls each hook along the list in this
order, so for every hook the steps run as the data path reads: `request` reaches the key swap
only after authorize and the write-ahead row, `response` completes the row only after meter
and settle, and the line per request is logged from the settled flow.
"""

from __future__ import annotations

from llamakey.state import GatewayState
from llamakey.steps.announce import Announce
from llamakey.steps.audit import AuditLog, CompleteAudit, WriteAhead
from llamakey.steps.authenticate import Authenticate
from llamakey.steps.authorize import Authorize
from llamakey.steps.configload import ConfigLoader
from llamakey.steps.identify import IdentifyProvider
from llamakey.steps.keyswap import KeySwap
from llamakey.steps.meter import Meter
from llamakey.steps.onboard import Onboard
from llamakey.steps.redact import Redact
from llamakey.steps.replay import StartOver
from llamakey.steps.settle import Settle


def gateway_addons(state: GatewayState | None = None) -> list[object]:
    """Fresh instances of every LlaMaKey addon, sharing one state."""
    state = state or GatewayState()
    audit_log = AuditLog(state)
    return [
        ConfigLoader(state),
        audit_log,
        StartOver(state),
        Onboard(state),  # answers http://lmk.invalid/ itself, before any step below sees it
        IdentifyProvider(state),
        Authenticate(state),
        Authorize(state),
        WriteAhead(state, audit_log),
        KeySwap(state),
        Meter(state),
        Settle(state),
        CompleteAudit(state, audit_log),
        Redact(state),
        Announce(state),
    ]
