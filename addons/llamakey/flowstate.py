"""What the gateway knows about one flow, in one typed object.

Each step of the data path reads and writes a `FlowState` instead of string keys in
`flow.metadata`, so steps need not import each other for key names and the type checker sees
every field. The states live in a `FlowStates` registry keyed weakly by the flow (as
mitmproxy's `proxyauth.py` keys its state by connection): a state dies with its flow, and a
copied flow (a duplicate, a flow loaded from a file) starts with none, so it has to pass every
step again. A replay sends the same flow object again: `steps/replay.py` forgets its state
first, so it too starts with none.

Only what a saved flow should carry for the people reading it (provider, user, groups, the
refusal, the cost, the deployment that served) is mirrored into `flow.metadata`; nothing
there is ever trusted back.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Protocol

from mitmproxy import http

from llamakey.providers import Carrier, ErrorShape, Provider
from llamakey.refusals import Refusal, refusal_response
from llamakey.rules.policy import UserPolicy
from llamakey.usage import ApiFlavor, Usage

# flow.metadata keys of the mirror (values stay tnetstring-serialisable: saved flows carry them).
PROVIDER = "lmk.provider"
USER = "lmk.user"
GROUPS = "lmk.groups"
REFUSED = "lmk.refused"
COST = "lmk.cost_usd"
DEPLOYMENT = "lmk.deployment"


class StreamAllowance(Protocol):
    """What a budget lets a streamed answer say (`steps.ratelimit.StreamBudget`), asked by the
    meter's tap on every chunk, synchronously: it must answer from what it holds, never wait."""

    def over(self, output_tokens: int, input_tokens: tuple[int, int, int] | None) -> str | None:
        """None while an answer of `output_tokens` so far (after the input, cache reads and
        cache writes the stream reported, if it did) is within its budgets; else why it must
        stop (the message its final error event and its audit row carry)."""
        ...


@dataclass(slots=True)
class FlowState:
    """One flow's passage through the gateway, step by step."""

    # identify
    provider: str | None = None  # set for every flow to a provider host
    flavor: ApiFlavor | None = None  # which API of the provider (usage.api_flavor)
    model: str | None = None  # the model the request asks for
    stream: bool = False  # the request asks for a streamed answer
    # authenticate
    user: str | None = None
    groups: tuple[str, ...] = ()
    carriers: list[Carrier] = field(default_factory=list)  # where the client put credentials
    marker: str = ""  # what stands in for the credential wherever the flow is shown
    policy: UserPolicy | None = None  # a JWT identity's rules, when its token set its groups
    # the gates a request must pass before the real key goes in, each set by its own step
    authenticated: bool = False
    authorized: bool = False
    audited: bool = False  # the write-ahead row is committed (or auditing is off)
    recorded: bool = False  # the flow has a row in the audit log (begun or refused)
    refusal: Refusal | None = None  # why the gateway answered itself
    # meter and settle
    injected_stream_usage: bool = False  # we asked upstream for a usage chunk the client did not
    client_body_bytes: int | None = None  # the body's size as the client sent it, if we changed it
    first_byte: float | None = None  # epoch seconds of the first body chunk sent to the client
    response_bytes: int = 0  # bytes of a streamed answer (its body is not kept)
    events: int = 0  # server-sent events streamed to the client (for an estimate)
    usage_estimated: bool = False  # the usage is our estimate: the client left before the
    # provider reported it
    client_disconnected: bool = False
    usage: Usage | None = None
    cost_usd: float | None = None
    bodies: tuple[str | None, str | None] | None = None  # request and answer text, redacted
    # (made once for the audit log's bodies and the spans: steps.audit.redacted_bodies)
    # budgets while a stream flows (README "Budgets")
    allowance: StreamAllowance | None = None  # set by the rate limits for a watched stream
    output_estimate: int = 0  # output tokens streamed so far, by `usage.cut.OutputCount`
    cut: str | None = None  # why the answer was cut off by a budget (its error event's message)
    # routing (README "Model catalogue and routing")
    deployment: str | None = None  # the catalogue deployment that served, by its name
    routed: bool = False  # sent to the catalogue's deployments (through the relay), not as asked
    upstream_model: str | None = None  # the model name the serving deployment knows
    route_pricing: Provider | None = None  # the catalogue entry that prices the serving deployment
    attempts: list[dict[str, object]] = field(default_factory=list)  # each deployment tried

    def refuse(
        self, flow: http.HTTPFlow, shape: ErrorShape, refusal: Refusal, message: str
    ) -> None:
        """Answer `flow` ourselves: nothing goes upstream, and the audit log names the rule."""
        self.refusal = refusal
        flow.response = refusal_response(shape, refusal, message)
        mirror(flow, self)

    @property
    def cleared(self) -> bool:
        """True once authenticated, authorized and audited: only then may a key go in."""
        return self.authenticated and self.authorized and self.audited and self.refusal is None


class FlowStates:
    """The `FlowState` of every live flow, created on first use and gone with its flow."""

    def __init__(self) -> None:
        self._states: weakref.WeakKeyDictionary[http.HTTPFlow, FlowState] = (
            weakref.WeakKeyDictionary()
        )

    def __call__(self, flow: http.HTTPFlow) -> FlowState:
        """The state of `flow`, made empty if it has none yet."""
        found = self._states.get(flow)
        if found is None:
            found = self._states[flow] = FlowState()
        return found

    def forget(self, flow: http.HTTPFlow) -> None:
        """Drop the state of `flow`, so that it passes every step again as a new request
        (mitmproxy replays a flow by sending the same object once more)."""
        self._states.pop(flow, None)

    def get(self, flow: http.HTTPFlow) -> FlowState | None:
        """The state of `flow` if a step has made one (only provider flows and refusals)."""
        return self._states.get(flow)

    def provider_flow(self, flow: http.HTTPFlow) -> FlowState | None:
        """The state of a flow to a provider that no step has answered yet, else None."""
        found = self._states.get(flow)
        if found is None or found.provider is None or flow.response is not None:
            return None
        return found


def mirror(flow: http.HTTPFlow, state: FlowState) -> None:
    """Copy what a saved flow should show into `flow.metadata`."""
    metadata = flow.metadata
    if state.provider is not None:
        metadata[PROVIDER] = state.provider
    if state.user is not None:
        metadata[USER] = state.user
        metadata[GROUPS] = list(state.groups)
    if state.refusal is not None:
        metadata[REFUSED] = state.refusal.value
    if state.cost_usd is not None:
        metadata[COST] = state.cost_usd
    if state.deployment is not None:
        metadata[DEPLOYMENT] = state.deployment
