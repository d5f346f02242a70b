"""Authorize: the rules an authenticated request must pass before anything is written ahead or
sent upstream: the endpoint and model allow-lists (README "Rules"), the rate limits and the
budgets.

Rate limits and then budgets run last, only for a request that passed every other rule and
that a limit or budget covers (`steps.ratelimit`): then `request` hands back an awaitable the
dispatcher awaits.

The user's policy was compiled when the configuration was loaded (`Settings.policies`); here
it is only looked up and matched. Every request to a provider must have a canonical target
(`rules.paths.canonical_problem`), whatever the policy: a target a server could read as another
path is refused (400), never cleaned and forwarded. Then, per provider, the endpoint list
(403) and the model list (403 for a model not listed, 400 when the model cannot be read or is
named twice). A refusal names its rule in the audit row (`refused_by`).
"""

from __future__ import annotations

from collections.abc import Awaitable

from mitmproxy import http

from llamakey.flowstate import FlowState
from llamakey.providers import ErrorShape
from llamakey.refusals import Refusal, set_retry_after
from llamakey.rules.budgets import Budget
from llamakey.rules.limits import RateLimit
from llamakey.rules.models import ModelKind, read_models
from llamakey.rules.paths import canonical_problem
from llamakey.state import GatewayState
from llamakey.steps.guard import fail_closed
from llamakey.steps.ratelimit import RateLimits
from llamakey.usage import ApiFlavor


class Authorize:
    """Clears authenticated provider flows against the configured rules."""

    def __init__(self, state: GatewayState, limits: RateLimits | None = None) -> None:
        self.state = state
        self.limits = limits if limits is not None else RateLimits(state)

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        state = self.state.flows.provider_flow(flow)
        settings = self.state.settings
        if state is None or not state.authenticated or settings is None:
            return None
        if (why := self._refusal(flow, state)) is not None:
            refusal, message = why
            shape = self._shape(state)
            state.refuse(flow, shape, refusal, message)
            return None
        policy = state.policy or settings.policies.get(state.user or "")
        if policy is not None and (policy.rate_limits or policy.budgets):
            provider = state.provider or ""
            applicable = [r for r in policy.rate_limits if r.applies(provider, state.model)]
            budgets = [b for b in policy.budgets if b.applies(provider, state.model)]
            if applicable or budgets:
                return self._admit(flow, state, applicable, budgets)
        state.authorized = True
        return None

    async def _admit(
        self, flow: http.HTTPFlow, state: FlowState, limits: list[RateLimit], budgets: list[Budget]
    ) -> None:
        """The rate limits, then the budgets, after every other rule (an awaitable only for a
        flow they cover)."""
        why = await self.limits.admit(flow, state, limits, budgets)
        if why is not None:
            state.refuse(flow, self._shape(state), why.refusal, why.message)
            if why.retry_after is not None and flow.response is not None:
                set_retry_after(flow.response, why.retry_after, why.retry)
            return
        state.authorized = True

    def _shape(self, state: FlowState) -> ErrorShape:
        return self.state.provider_entry(state).error_shape

    def _refusal(self, flow: http.HTTPFlow, state: FlowState) -> tuple[Refusal, str] | None:
        settings = self.state.settings
        assert settings is not None and state.provider is not None
        request = flow.request
        target = request.data.path
        if (problem := canonical_problem(target)) is not None:
            return Refusal.PATH_NOT_CANONICAL, f"{problem}; write the path as the API documents it"
        policy = state.policy or settings.policies.get(state.user or "")
        if policy is None:  # an authenticated user always has one: fail closed
            return Refusal.ENDPOINT_NOT_ALLOWED, "no policy is loaded for this user"
        if not policy.restricted:
            return None
        provider = state.provider
        method = request.method.upper()
        path = target.split(b"?", 1)[0].decode("ascii")  # canonical: ASCII
        endpoints = policy.endpoints.get(provider)
        if endpoints is not None and not endpoints.allows(method, path):
            where = policy.sources.get(f"endpoints.{provider}", "")
            return (
                Refusal.ENDPOINT_NOT_ALLOWED,
                f"{method} {path} is not an endpoint {state.user} may call on {provider} "
                f"({where}.endpoints.{provider})",
            )
        models = policy.models.get(provider)
        if models is None:
            return None
        read = read_models(
            state.flavor not in (None, ApiFlavor.OTHER),
            method,
            target.decode("ascii"),
            request.headers.get("content-type", ""),
            request.headers.get("content-encoding", ""),
            request.raw_content or b"",
        )
        where = f"{policy.sources.get(f'models.{provider}', '')}.models.{provider}"
        match read.kind:
            case ModelKind.NONE:
                return None
            case ModelKind.BATCH:
                if endpoints is not None:  # listed explicitly: checked above
                    return None
                return (
                    Refusal.MODEL_NOT_ALLOWED,
                    f"{read.why}, which the model list ({where}) cannot check; list "
                    f"'{method} {path}' in endpoints.{provider} to allow batches",
                )
            case ModelKind.UNKNOWN:
                return Refusal.MODEL_UNKNOWN, f"{read.why}; {where} needs to know the model"
            case ModelKind.AMBIGUOUS:
                return Refusal.AMBIGUOUS_MODEL, f"{read.why}: name the model once"
        for model in read.models:
            # A catalogued model passes under the name it was sent as or its catalogue name
            # (listing the catalogue name allows its aliases too).
            catalogued = settings.models.lookup(model) if provider == "openai" else None
            if not models.allows(model) and not (catalogued and models.allows(catalogued.name)):
                return (
                    Refusal.MODEL_NOT_ALLOWED,
                    f"model {model!r} is not one {state.user} may use on {provider} ({where})",
                )
        return None
