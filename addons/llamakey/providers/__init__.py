"""Everything about each LLM provider: hosts, credential carriers, error shapes."""

from llamakey.providers.catalogue import (
    BUILTIN_PROVIDERS,
    Carrier,
    ErrorShape,
    Provider,
    ProviderIndex,
)

__all__ = ["BUILTIN_PROVIDERS", "Carrier", "ErrorShape", "Provider", "ProviderIndex"]
