"""Route: a request to api.openai.com for a catalogued model (or one of its aliases) goes to
one of the model's deployments (README "Model catalogue and routing").

It runs after authorize (the rules saw the model as the client named it) and after the
write-ahead row, just before the key swap, and only for a flow all of them cleared. The
balancer orders the deployments that serve the request's API (chat completions, embeddings,
Responses) and have a key; the flow is then pointed at the relay (`routing/relay.py`), which
tries them in that order, rewriting host, path, query, key header and the body's model for
each, and streams the first answer worth keeping back through mitmproxy. Afterwards the flow
shows the request as the client sent it, the deployment that served in its state (the audit
row's `deployment`) and every attempt (`attempts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import weakref
from collections.abc import Awaitable
from pathlib import Path

import certifi
import httpx
from mitmproxy import http

from llamakey.config import KeyRing, Settings
from llamakey.config.catalogue import CatalogueModel, Deployment
from llamakey.flowstate import FlowState, mirror
from llamakey.refusals import Refusal
from llamakey.routing import Balancer, Relay, Route
from llamakey.routing.relay import ROUTE_HEADER, upstream_client
from llamakey.state import GatewayState
from llamakey.steps.guard import fail_closed

ROUTED_APIS = {
    "/v1/chat/completions": "chat/completions",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "responses",
}
"""The OpenAI paths a catalogued model is routed on (others go to api.openai.com as sent)."""


class RouteToDeployment:
    """Sends catalogued models' requests to their deployments, through the relay."""

    def __init__(self, state: GatewayState, balancer: Balancer | None = None) -> None:
        self.state = state
        self.balancer = balancer or Balancer()
        self.relay = Relay(self.balancer, self._key_for, self._client)
        self._starting = asyncio.Lock()
        self._routes: weakref.WeakKeyDictionary[
            http.HTTPFlow, tuple[str, Route, tuple[str, str, int]]
        ] = weakref.WeakKeyDictionary()
        self._rings: dict[str, KeyRing] = {}
        self._rings_for: object = None  # the catalogue the key rings were made for
        self._upstream: httpx.AsyncClient | None = None
        self._trust: tuple[tuple[Path, ...], int] | None = None  # what the client was made for
        self._retired: list[httpx.AsyncClient] = []

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        state = self.state.flows.provider_flow(flow)
        settings = self.state.settings
        if state is None or settings is None or not state.cleared or state.provider != "openai":
            return None
        model = settings.models.lookup(state.model)
        api = ROUTED_APIS.get(flow.request.path.partition("?")[0])
        if model is None or api is None or flow.request.method != "POST":
            return None
        return self._route(flow, state, settings, model, api)

    async def _route(
        self,
        flow: http.HTTPFlow,
        state: FlowState,
        settings: Settings,
        model: CatalogueModel,
        api: str,
    ) -> None:
        shape = self.state.provider_entry(state).error_shape
        serving = [d for d in self.balancer.order(model) if d.path_for(api) is not None]
        keyed = [d for d in serving if d.keys]
        if not serving:
            state.refuse(
                flow,
                shape,
                Refusal.NO_DEPLOYMENT,
                f"no deployment of {model.name} serves {flow.request.path.partition('?')[0]}",
            )
            return
        if not keyed:
            state.refuse(
                flow,
                shape,
                Refusal.NO_PROVIDER_KEY,
                f"no real key for any deployment of {model.name}: {serving[0].missing_key}",
            )
            return
        await self._ready(settings)
        route = Route(model, api, keyed, flow, state)
        token = self.relay.register(route)
        request = flow.request
        self._routes[flow] = (token, route, (request.scheme, request.host, request.port))
        state.routed = True
        authority = request.host_header
        request.scheme, request.host, request.port = "http", "127.0.0.1", self.relay.port
        request.host_header = authority  # setting host rewrote it
        request.headers[ROUTE_HEADER] = token

    async def _ready(self, settings: Settings) -> None:
        """The relay listening, and its client and key rings made for these settings."""
        async with self._starting:
            await self.relay.start()
            if settings.models is not self._rings_for:
                self._rings = {d.name: KeyRing(d.keys) for d in settings.models.deployments()}
                self._rings_for = settings.models
            trust = (settings.upstream_cas, settings.file.limits.idle_timeout_seconds)
            if self._upstream is None or trust != self._trust:
                context = await asyncio.to_thread(_upstream_context, trust[0])
                if self._upstream is not None:
                    # Streams in flight still read from it: closed at the end, not now.
                    self._retired.append(self._upstream)
                self._upstream = upstream_client(context, trust[1])
                self._trust = trust

    def _key_for(self, deployment: Deployment) -> str:
        ring = self._rings.get(deployment.name)
        if ring is None or ring.keys != deployment.keys:  # routed before a reload changed it
            ring = KeyRing(deployment.keys)
        return ring.next()

    def _client(self) -> httpx.AsyncClient:
        assert self._upstream is not None  # made by `_ready` before any route is registered
        return self._upstream

    def _restore(self, flow: http.HTTPFlow, final: bool) -> None:
        """Show the request as the client sent it; at the end, record the attempts."""
        entry = self._routes.get(flow)
        if entry is None:
            return
        token, route, (scheme, host, port) = entry
        request = flow.request
        if request.host != host:
            authority = request.host_header
            request.scheme, request.host, request.port = scheme, host, port
            request.host_header = authority
            request.headers.pop(ROUTE_HEADER, None)
        if final:
            self.relay.forget(token)  # a flow that never reached the relay
            del self._routes[flow]
            state = route.state
            state.attempts = [a.as_json() for a in route.attempts]
            mirror(flow, state)

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self._restore(flow, final=False)

    @fail_closed
    def response(self, flow: http.HTTPFlow) -> None:
        self._restore(flow, final=True)

    @fail_closed
    def error(self, flow: http.HTTPFlow) -> None:
        self._restore(flow, final=True)

    async def done(self) -> None:
        await self.relay.stop()
        clients = [*self._retired, *([self._upstream] if self._upstream else [])]
        self._upstream, self._retired = None, []
        for client in clients:
            with contextlib.suppress(Exception):
                await client.aclose()


def _upstream_context(extra_cas: tuple[Path, ...]) -> ssl.SSLContext:
    """What the relay trusts upstream: certifi's roots plus `extra_cas`, as mitmproxy does
    (`steps/configload.py` gives it the same). Blocking: reads files."""
    context = ssl.create_default_context(cafile=certifi.where())
    for path in extra_cas:
        context.load_verify_locations(cafile=str(path))
    return context
