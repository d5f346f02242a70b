"""The built-in provider catalogue: one entry per provider holds everything we know about it.

Its hosts and where it expects its credential, the error body its SDK parses, the SDK's key
variables, which parser reads its usage, how genai-prices names it, and the quirks of its usage
reports. The rest of the code asks the `Provider` object, never compares provider names.

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
    # A WebSocket subprotocol: browsers cannot set headers on a WebSocket, so OpenAI's Realtime
    # API takes `Sec-WebSocket-Protocol: realtime, openai-insecure-api-key.<key>, ...`.
    WS_PROTOCOL = "sec-websocket-protocol"


class UsageFamily(StrEnum):
    """The wire format of a provider's own API, which decides how its usage is read.

    Every family's parsers are registered in `llamakey.usage.parsers`. Paths of another family
    are still recognised on any provider (`/v1/messages` is Anthropic's format on DeepSeek, xAI
    and Fireworks too; `:generateContent` is Gemini's), see `llamakey.usage.api_flavor`.
    """

    OPENAI = "openai"  # OpenAI and the OpenAI-compatibles: chat, responses, embeddings...
    ANTHROPIC = "anthropic"  # messages
    GEMINI = "gemini"  # generateContent and kin
    COHERE = "cohere"  # native /v1 and /v2 (its /compatibility path is OpenAI-style)
    NONE = "none"  # answers carry no token usage (Vectara): every request is "other"


@dataclass(frozen=True, slots=True)
class Pricing:
    """Where genai-prices keeps a provider's prices, and how our model names map to its ids."""

    provider_id: str
    """The genai-prices provider id; when `routed`, the prefix of one id per serving provider."""
    routed: bool = False
    """Model names carry the serving provider after a colon (Hugging Face's router:
    `meta-llama/Llama-3.3-70B-Instruct:groq`), which selects the table `provider_id + route`."""
    route_policies: frozenset[str] = frozenset()
    """Routes that are routing policies, not providers: they do not say who served the call."""


@dataclass(frozen=True, slots=True)
class Provider:
    """One LLM API provider: its hosts, how it takes a key, and how its usage is metered."""

    name: str
    hosts: tuple[str, ...]  # exact names, or "*.suffix" for any sub-domain
    default_carrier: Carrier = Carrier.BEARER
    carriers: frozenset[Carrier] = frozenset({Carrier.BEARER})  # accepted upstream
    error_shape: ErrorShape = ErrorShape.OPENAI
    key_env: tuple[
        str, ...
    ] = ()  # the SDK's own key variable(s), set to the master key by `lmk env`
    legacy: str | None = None  # why a provider is kept though no longer served
    usage_family: UsageFamily = UsageFamily.OPENAI
    """Which parser reads its usage; a provider added in the config is OpenAI-compatible."""
    pricing: Pricing | None = None
    """Its prices in genai-prices; None: it has none there, so its calls cost None."""
    include_stream_usage: bool = False
    """Its OpenAI-style chat streams carry usage only when asked (`stream_options.include_usage`),
    so the gateway asks for it upstream and drops the extra chunk. The others send it unasked."""
    reasoning_beside_output: bool = False
    """Its chat usage counts reasoning (and citation) tokens beside `completion_tokens` rather
    than inside it, and bills them as output (genai-prices reads them so)."""
    key_env_prefix: str = ""
    """What `lmk env` puts before the master key in `key_env` (stripped again on the way in)."""
    otel_name: str | None = None
    """Its ``gen_ai.provider.name`` in OpenTelemetry's GenAI conventions, where that differs
    from `name` (spans, README "Traces")."""

    @property
    def genai_name(self) -> str:
        """What spans call it (``gen_ai.system``, ``gen_ai.provider.name``)."""
        return self.otel_name or self.name


BUILTIN_PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider(
            "openai",
            ("api.openai.com",),
            carriers=frozenset({Carrier.BEARER, Carrier.WS_PROTOCOL}),
            key_env=("OPENAI_API_KEY",),
            pricing=Pricing("openai"),
            include_stream_usage=True,
        ),
        Provider(
            "azure",
            ("*.openai.azure.com", "*.cognitiveservices.azure.com", "*.services.ai.azure.com"),
            otel_name="azure.ai.openai",
            default_carrier=Carrier.API_KEY,
            carriers=frozenset({Carrier.API_KEY, Carrier.BEARER}),
            key_env=("AZURE_OPENAI_API_KEY",),
            pricing=Pricing("azure"),
            include_stream_usage=True,
        ),
        Provider(
            "anthropic",
            ("api.anthropic.com",),
            default_carrier=Carrier.X_API_KEY,
            carriers=frozenset({Carrier.X_API_KEY, Carrier.BEARER}),
            error_shape=ErrorShape.ANTHROPIC,
            key_env=("ANTHROPIC_API_KEY",),
            usage_family=UsageFamily.ANTHROPIC,
            pricing=Pricing("anthropic"),
        ),
        Provider(
            "cohere",
            ("api.cohere.com", "api.cohere.ai"),
            error_shape=ErrorShape.COHERE,
            key_env=("CO_API_KEY", "COHERE_API_KEY"),
            usage_family=UsageFamily.COHERE,
            pricing=Pricing("cohere"),
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
            # Priced per serving provider (`huggingface_{provider}`); an auto-routed call
            # (no suffix, or a routing policy) does not say which one served it.
            pricing=Pricing(
                "huggingface_",
                routed=True,
                route_policies=frozenset({"fastest", "cheapest", "preferred", "auto"}),
            ),
            # The router's backends (TGI, vLLM and friends) honour include_usage.
            include_stream_usage=True,
            # huggingface_hub routes through its router only for hf_ tokens.
            key_env_prefix="hf_",
        ),
        Provider(
            "vectara",
            ("api.vectara.io",),
            default_carrier=Carrier.X_API_KEY,
            carriers=frozenset({Carrier.X_API_KEY, Carrier.BEARER}),
            error_shape=ErrorShape.VECTARA,
            key_env=("VECTARA_API_KEY",),
            usage_family=UsageFamily.NONE,  # no price data either
        ),
        Provider(
            "anyscale",
            ("api.endpoints.anyscale.com",),
            key_env=("ANYSCALE_API_KEY",),
            legacy="AnyScale Endpoints' multi-tenant API was shut down on 2024-08-01",
            include_stream_usage=True,  # it was vLLM; no price data
        ),
        Provider(
            "perplexity",
            ("api.perplexity.ai",),
            key_env=("PERPLEXITY_API_KEY",),
            pricing=Pricing("perplexity"),
            reasoning_beside_output=True,
        ),
        Provider(
            "gemini",
            ("generativelanguage.googleapis.com",),
            otel_name="gcp.gemini",
            default_carrier=Carrier.GOOG_API_KEY,
            carriers=frozenset({Carrier.GOOG_API_KEY, Carrier.QUERY_KEY, Carrier.BEARER}),
            error_shape=ErrorShape.GOOGLE,
            # google-genai reads GOOGLE_API_KEY first and warns on every client when
            # GEMINI_API_KEY is set as well ("Both GOOGLE_API_KEY and GEMINI_API_KEY are set"):
            # set only the one it prefers.
            key_env=("GOOGLE_API_KEY",),
            usage_family=UsageFamily.GEMINI,
            pricing=Pricing("google"),
        ),
        Provider(
            "mistral",
            ("api.mistral.ai",),
            otel_name="mistral_ai",
            key_env=("MISTRAL_API_KEY",),
            pricing=Pricing("mistral"),
        ),
        Provider(
            "groq",
            ("api.groq.com",),
            key_env=("GROQ_API_KEY",),
            pricing=Pricing("groq"),
        ),
        Provider(
            "together",
            ("api.together.xyz", "api.together.ai", "api-inference.together.ai"),
            key_env=("TOGETHER_API_KEY",),
            pricing=Pricing("together"),
        ),
        Provider(
            "deepseek",
            ("api.deepseek.com",),
            carriers=frozenset({Carrier.BEARER, Carrier.X_API_KEY}),
            key_env=("DEEPSEEK_API_KEY",),
            pricing=Pricing("deepseek"),
            include_stream_usage=True,
        ),
        Provider(
            "openrouter",
            ("openrouter.ai",),
            key_env=("OPENROUTER_API_KEY",),
            pricing=Pricing("openrouter"),
        ),
        Provider(
            "xai",
            ("api.x.ai",),
            otel_name="x_ai",
            carriers=frozenset({Carrier.BEARER, Carrier.X_API_KEY}),
            key_env=("XAI_API_KEY",),
            pricing=Pricing("x-ai"),
            reasoning_beside_output=True,
        ),
        Provider(
            "fireworks",
            ("api.fireworks.ai",),
            key_env=("FIREWORKS_API_KEY",),
            pricing=Pricing("fireworks"),
        ),
    )
}


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
