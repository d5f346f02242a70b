"""The built-in provider catalogue: which hosts belong to which provider, and where each one
expects its credential.

A provider is matched by the host the client asked for (Host header / SNI), never by the
address we dial, so tests can redirect the connection without changing what is matched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class ErrorShape(StrEnum):
    """The error body an SDK parses, so a refusal raises that SDK's own exception."""

    OPENAI = "openai"  # {"error": {"message", "type", "param", "code"}}
    ANTHROPIC = "anthropic"  # {"type": "error", "error": {"type", "message"}}
    GOOGLE = "google"  # {"error": {"code", "message", "status"}}
    COHERE = "cohere"  # {"message": ...}
    HUGGINGFACE = "huggingface"  # {"error": "..."}
    VECTARA = "vectara"  # {"messages": [...], "request_id": ...}


class Carrier(StrEnum):
    """Where a credential travels in a request."""

    BEARER = "authorization"  # Authorization: Bearer <key>
    X_API_KEY = "x-api-key"
    API_KEY = "api-key"
    GOOG_API_KEY = "x-goog-api-key"
    QUERY_KEY = "?key"  # ...?key=<key>


@dataclass(frozen=True, slots=True)
class Provider:
    """One LLM API provider: its hosts and how it takes a key."""

    name: str
    hosts: tuple[str, ...]  # exact names, or "*.suffix" for any sub-domain
    default_carrier: Carrier = Carrier.BEARER
    carriers: frozenset[Carrier] = frozenset({Carrier.BEARER})  # accepted upstream
    error_shape: ErrorShape = ErrorShape.OPENAI
    key_env: tuple[
        str, ...
    ] = ()  # the SDK's own key variable(s), set to the master key by `lmk env`
    legacy: str | None = None  # why a provider is kept though no longer served


BUILTIN_PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider("openai", ("api.openai.com",), key_env=("OPENAI_API_KEY",)),
        Provider(
            "azure",
            ("*.openai.azure.com", "*.cognitiveservices.azure.com", "*.services.ai.azure.com"),
            default_carrier=Carrier.API_KEY,
            carriers=frozenset({Carrier.API_KEY, Carrier.BEARER}),
            key_env=("AZURE_OPENAI_API_KEY",),
        ),
        Provider(
            "anthropic",
            ("api.anthropic.com",),
            default_carrier=Carrier.X_API_KEY,
            carriers=frozenset({Carrier.X_API_KEY, Carrier.BEARER}),
            error_shape=ErrorShape.ANTHROPIC,
            key_env=("ANTHROPIC_API_KEY",),
        ),
        Provider(
            "cohere",
            ("api.cohere.com", "api.cohere.ai"),
            error_shape=ErrorShape.COHERE,
            key_env=("CO_API_KEY", "COHERE_API_KEY"),
        ),
        Provider(
            "huggingface",
            (
                "router.huggingface.co",
                "api-inference.huggingface.co",
                "huggingface.co",
                "*.endpoints.huggingface.cloud",
            ),
            error_shape=ErrorShape.HUGGINGFACE,
            key_env=("HF_TOKEN",),
        ),
        Provider(
            "vectara",
            ("api.vectara.io",),
            default_carrier=Carrier.X_API_KEY,
            carriers=frozenset({Carrier.X_API_KEY, Carrier.BEARER}),
            error_shape=ErrorShape.VECTARA,
            key_env=("VECTARA_API_KEY",),
        ),
        Provider(
            "anyscale",
            ("api.endpoints.anyscale.com",),
            key_env=("ANYSCALE_API_KEY",),
            legacy="AnyScale Endpoints' multi-tenant API was shut down on 2024-08-01",
        ),
        Provider("perplexity", ("api.perplexity.ai",), key_env=("PERPLEXITY_API_KEY",)),
        Provider(
            "gemini",
            ("generativelanguage.googleapis.com",),
            default_carrier=Carrier.GOOG_API_KEY,
            carriers=frozenset({Carrier.GOOG_API_KEY, Carrier.QUERY_KEY, Carrier.BEARER}),
            error_shape=ErrorShape.GOOGLE,
            key_env=("GEMINI_API_KEY", "GOOGLE_API_KEY"),
        ),
        Provider("mistral", ("api.mistral.ai",), key_env=("MISTRAL_API_KEY",)),
        Provider("groq", ("api.groq.com",), key_env=("GROQ_API_KEY",)),
        Provider(
            "together",
            ("api.together.xyz", "api.together.ai", "api-inference.together.ai"),
            key_env=("TOGETHER_API_KEY",),
        ),
        Provider(
            "deepseek",
            ("api.deepseek.com",),
            carriers=frozenset({Carrier.BEARER, Carrier.X_API_KEY}),
            key_env=("DEEPSEEK_API_KEY",),
        ),
        Provider("openrouter", ("openrouter.ai",), key_env=("OPENROUTER_API_KEY",)),
        Provider(
            "xai",
            ("api.x.ai",),
            carriers=frozenset({Carrier.BEARER, Carrier.X_API_KEY}),
            key_env=("XAI_API_KEY",),
        ),
        Provider("fireworks", ("api.fireworks.ai",), key_env=("FIREWORKS_API_KEY",)),
    )
}


def host_matches(pattern: str, host: str) -> bool:
    """True when `host` is `pattern`, or a sub-domain of it for a "*.suffix" pattern."""
    host = host.lower().rstrip(".")
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


class ProviderIndex:
    """Host -> provider lookup: a dict for exact hosts, a short list of suffixes for wildcards."""

    def __init__(self, providers: Iterable[Provider]) -> None:
        self._exact: dict[str, Provider] = {}
        self._suffixes: list[tuple[str, Provider]] = []
        for provider in providers:
            for pattern in provider.hosts:
                if pattern.startswith("*."):
                    self._suffixes.append((pattern[1:], provider))
                else:
                    self._exact[pattern] = provider
        # Longest suffix first, so a more specific wildcard wins.
        self._suffixes.sort(key=lambda item: -len(item[0]))

    def lookup(self, host: str | None) -> Provider | None:
        """The provider serving `host`, or None for any other host."""
        if not host:
            return None
        host = host.lower().rstrip(".")
        if found := self._exact.get(host):
            return found
        for suffix, provider in self._suffixes:
            if host.endswith(suffix):
                return provider
        return None

    def host_patterns(self) -> list[str]:
        """Every configured host pattern, exact and wildcard."""
        return sorted({*self._exact, *("*" + s for s, _ in self._suffixes)})

    def allow_hosts_regex(self) -> str:
        """One anchored regex for mitmproxy's `allow_hosts`: intercept TLS for these hosts only.

        mitmproxy matches it with re.search against "host:port" strings, so both ends are
        anchored: "openai.com" alone would also match "openai.com.evil.net".
        """
        parts = [re.escape(h) for h in self._exact]
        parts += [r"[^:]+" + re.escape(s) for s, _ in self._suffixes]
        return r"^(?:" + "|".join(sorted(parts)) + r"):\d+$"
