"""Replay: a flow replayed from mitmweb (or with `replay.client`) starts over as a new request.

mitmproxy's client replay sends the *same* flow object again: backed up, its response and
error cleared, `is_replay` set to ``"request"``. What the gateway knew of its first passage
would still be attached to it: the user it was authenticated as, that its audit row was
written, its usage, cost and comment. So before the first step sees a replay, its `FlowState`,
its mirror in `flow.metadata` and its comment are dropped, and it has to pass every step again,
authentication first. A recorded request carries the marker where the master key was, which
authenticates no one: a replay is refused unless a master key is put back in by hand.
"""

from __future__ import annotations

from mitmproxy import http

from llamakey import flowstate
from llamakey.state import GatewayState
from llamakey.steps.guard import fail_closed

_MIRRORED = (
    flowstate.PROVIDER,
    flowstate.USER,
    flowstate.GROUPS,
    flowstate.REFUSED,
    flowstate.COST,
)


class StartOver:
    """Makes a replayed flow a new request to every step after it."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.is_replay != "request":
            return
        self.state.flows.forget(flow)
        for key in _MIRRORED:
            flow.metadata.pop(key, None)
        flow.comment = ""
