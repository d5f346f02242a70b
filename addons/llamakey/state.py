"""State shared by the gateway's steps: the live configuration, and every flow's own state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from llamakey.config import ResolvedProvider, Settings
from llamakey.flowstate import FlowState, FlowStates
from llamakey.identity import JwtIdentities, MasterKeys
from llamakey.pricing import PriceOverride, price_overrides
from llamakey.providers import BUILTIN_PROVIDERS, Provider
from llamakey.scrub import Scrubber


@dataclass
class GatewayState:
    """The live configuration, swapped whole on reload so a hook never sees half of one."""

    settings: Settings | None = None
    scrubber: Scrubber = field(default_factory=lambda: Scrubber(()))
    master_keys: MasterKeys = field(default_factory=MasterKeys)
    jwt: JwtIdentities | None = None  # `[jwt]`: bearer JWTs as identities
    flows: FlowStates = field(default_factory=FlowStates)
    price_overrides: Mapping[str, PriceOverride] = field(default_factory=dict)
    """``[prices]`` as `pricing.cost_usd` takes them (Settle, budgets), built once per load."""

    def install(self, settings: Settings) -> None:
        self.settings = settings
        self.scrubber = Scrubber(settings.real_keys)
        self.master_keys = MasterKeys(settings.users_by_hash)
        self.jwt = JwtIdentities.of(settings, self.jwt)
        self.price_overrides = price_overrides(settings.file.prices)

    def provider_entry(self, flow: FlowState) -> Provider:
        """The catalogue entry of the provider a flow went to (for a routed flow, that of the
        deployment that served it). One dropped from the config while the flow was in flight
        is metered and priced as before (that depends on its entry only)."""
        if flow.route_pricing is not None:  # routed: the deployment that served meters it
            return flow.route_pricing
        resolved = self.provider_of(flow)
        if resolved is not None:
            return resolved.provider
        name = flow.provider or ""
        return BUILTIN_PROVIDERS.get(name) or Provider(name, ())

    def price_targets(self, flow: FlowState) -> list[tuple[Provider, str | None]]:
        """Where a request may be priced before it is sent: (entry, model) of each deployment of
        a catalogued model (any of them may serve it), else its provider and model."""
        settings = self.settings
        model = (
            settings.models.lookup(flow.model) if settings and flow.provider == "openai" else None
        )
        if model is not None:
            return [(d.pricing, d.model) for d in model.deployments]
        return [(self.provider_entry(flow), flow.model)]

    def provider_of(self, flow: FlowState | None) -> ResolvedProvider | None:
        """The resolved provider a flow was identified as going to, if any."""
        if flow is None or flow.provider is None or self.settings is None:
            return None
        return self.settings.providers.get(flow.provider)
