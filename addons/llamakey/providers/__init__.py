"""Everything about each LLM provider: hosts, credential carriers, error shapes, metering."""

from llamakey.providers.catalogue import (
    BUILTIN_PROVIDERS,
    Carrier,
    ErrorShape,
    Pricing,
    Provider,
    ProviderIndex,
    UsageFamily,
)

__all__ = [
    "BUILTIN_PROVIDERS",
    "Carrier",
    "ErrorShape",
    "Pricing",
    "Provider",
    "ProviderIndex",
    "UsageFamily",
]
