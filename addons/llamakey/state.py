"""State shared by the gateway's addons, and the flow metadata keys they agree on."""

from __future__ import annotations

from dataclasses import dataclass, field

from mitmproxy import http

from llamakey import refusals as errors
from llamakey.config import ResolvedProvider, Settings
from llamakey.credentials import Scrubber

# flow.metadata keys (values stay tnetstring-serialisable: saved flows carry them).
PROVIDER = "lmk.provider"  # provider name, set for every flow to a provider host
USER = "lmk.user"  # user name once authenticated
GROUPS = "lmk.groups"  # list of group names
MARKER = "lmk.marker"  # what stands in for the credential wherever the flow is shown
CARRIERS = "lmk.carriers"  # where the client put its credential (Carrier values)
REFUSED = errors.REFUSED  # Refusal value when the gateway answered itself


@dataclass
class GatewayState:
    """The live configuration, swapped whole on reload so a hook never sees half of one."""

    settings: Settings | None = None
    scrubber: Scrubber = field(default_factory=lambda: Scrubber(()))

    def install(self, settings: Settings) -> None:
        self.settings = settings
        self.scrubber = Scrubber(settings.real_keys)

    def provider_of(self, flow: http.HTTPFlow) -> ResolvedProvider | None:
        """The resolved provider a flow was identified as going to, if any."""
        name = flow.metadata.get(PROVIDER)
        if name is None or self.settings is None:
            return None
        return self.settings.providers.get(name)
