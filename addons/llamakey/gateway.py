"""The gateway: our addons in data-path order, around one shared state.

(a replay starts over) -> identify the provider -> authenticate -> authorize -> write the audit
row ahead -> route a catalogued model to its deployments -> swap in the real key -> (upstream)
-> stream and meter -> settle usage and cost -> settle rate limits -> complete the audit row ->
queue the span -> redact -> announce. mitmproxy calls each hook along the list in this order,
so for every hook the steps run as the data path reads: `request` reaches the key swap only
after authorize and the write-ahead row, `response` completes the row only after meter and
settle, and the line per request is logged from the settled flow.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

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
from llamakey.steps.ratelimit import RateLimits
from llamakey.steps.redact import Redact
from llamakey.steps.replay import StartOver
from llamakey.steps.route import RouteToDeployment
from llamakey.steps.settle import Settle
from llamakey.steps.trace import Trace


def gateway_addons(state: GatewayState | None = None) -> list[object]:
    """Fresh instances of every LlaMaKey addon, sharing one state."""
    state = state or GatewayState()
    audit_log = AuditLog(state)
    limits = RateLimits(state)
    return [
        ConfigLoader(state),
        audit_log,
        StartOver(state),
        Onboard(state),  # answers http://lmk.invalid/ itself, before any step below sees it
        IdentifyProvider(state),
        Authenticate(state),
        Authorize(state, limits),
        WriteAhead(state, audit_log),
        RouteToDeployment(state),  # a catalogued model: to its deployments, via the relay
        KeySwap(state),
        Meter(state),
        Settle(state),
        limits,  # owns the counter store; settles token limits to the real usage
        CompleteAudit(state, audit_log),
        Trace(state),  # a span per ended call, queued for its destination's exporter thread
        Redact(state),
        Announce(state),
    ]


# The hooks our steps implement (lifecycle hooks are forwarded separately).
_FLOW_HOOKS = (
    "http_connect",
    "http_connect_error",
    "requestheaders",
    "request",
    "responseheaders",
    "response",
    "error",
    "server_connect",
    "server_connected",
    "websocket_message",
)


class Gateway:
    """The steps as one mitmproxy addon, calling each hook along them in data-path order.

    mitmproxy calls every hook on every addon of its chain (a lookup per addon per event), so
    fifteen steps registered one by one cost fifteen lookups for every event of every flow;
    as one addon that dispatches to the steps that implement the hook, they cost one. A step
    that answers asynchronously (the write-ahead row) is awaited before the next step runs.
    """

    def __init__(self, steps: list[object]) -> None:
        self.steps = steps
        self._hooks: dict[str, tuple[Callable[..., object], ...]] = {
            hook: tuple(getattr(s, hook) for s in steps if hasattr(s, hook))
            for hook in (*_FLOW_HOOKS, "load", "configure", "running", "done")
        }

    def _call(self, hook: str, *args: object) -> Awaitable[None] | None:
        methods = self._hooks[hook]
        for position, method in enumerate(methods):
            result = method(*args)
            if result is not None and inspect.isawaitable(result):
                return self._rest(result, methods[position + 1 :], args)
        return None

    async def _rest(
        self,
        pending: Awaitable[object],
        methods: tuple[Callable[..., object], ...],
        args: tuple[object, ...],
    ) -> None:
        await pending
        for method in methods:
            result = method(*args)
            if result is not None and inspect.isawaitable(result):
                await result

    # Lifecycle: every step's own, in order.
    def load(self, loader: object) -> None:
        self._call("load", loader)

    def configure(self, updated: set[str]) -> None:
        self._call("configure", updated)

    def running(self) -> Awaitable[None] | None:
        return self._call("running")

    def done(self) -> Awaitable[None] | None:
        return self._call("done")

    # Flows and connections.
    def http_connect(self, flow: object) -> Awaitable[None] | None:
        return self._call("http_connect", flow)

    def http_connect_error(self, flow: object) -> Awaitable[None] | None:
        return self._call("http_connect_error", flow)

    def requestheaders(self, flow: object) -> Awaitable[None] | None:
        return self._call("requestheaders", flow)

    def request(self, flow: object) -> Awaitable[None] | None:
        return self._call("request", flow)

    def responseheaders(self, flow: object) -> Awaitable[None] | None:
        return self._call("responseheaders", flow)

    def response(self, flow: object) -> Awaitable[None] | None:
        return self._call("response", flow)

    def error(self, flow: object) -> Awaitable[None] | None:
        return self._call("error", flow)

    def server_connect(self, data: object) -> Awaitable[None] | None:
        return self._call("server_connect", data)

    def server_connected(self, data: object) -> Awaitable[None] | None:
        return self._call("server_connected", data)

    def websocket_message(self, flow: object) -> Awaitable[None] | None:
        return self._call("websocket_message", flow)
