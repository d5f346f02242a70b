"""A local HTTPS server that stands in for every LLM provider in the end-to-end tests.

There is no internet in the test environment, so the proxy under test dials this server instead
of the real provider (like ``curl --connect-to``): the Host header and SNI still name the real
provider, which is why the server certificate covers every name in :data:`PROVIDER_HOSTS`. The
certificate is issued by a trustme CA that the proxy must trust for its upstream connections.

Routing is by host *and* path, because several providers share paths (``/v1/chat/completions``)
but differ in the usage fields they report. A direct caller that cannot send the real Host (an SDK
pointed at ``https://127.0.0.1:<port>``) may name it in the ``x-mock-host`` header; without it,
requests to an unknown host such as ``localhost`` are routed by path alone.

Every answer is what the official SDK for that provider parses (checked against the installed
versions in ``tests/test_mock_upstream.py``), and every answer reports fixed token counts per
provider family, so tests can compare what the proxy recorded with :meth:`MockUpstream.usage_for`.

Endpoints:

* OpenAI-style ``.../chat/completions``, ``.../responses``, ``.../embeddings`` and
  ``GET .../models`` on every OpenAI-compatible host;
* Anthropic ``/v1/messages`` (also on DeepSeek and xAI) and ``GET /v1/models``;
* Gemini ``/{v1,v1beta}/models/{m}:generateContent``, ``:streamGenerateContent`` (SSE with
  ``alt=sse``, else one JSON array), ``:countTokens``, ``:embedContent``;
* Cohere ``/v2/chat`` (SSE stream) and ``/v1/chat`` (NDJSON stream); Vectara ``/v2/query``;
* huggingface.co ``GET /api/models/{repo}`` (with inferenceProviderMapping) and
  ``GET /api/agent-harnesses`` (a registry huggingface_hub 2.4 fetches at most daily).

Anything else is a 404 in the OpenAI error shape.

Request headers that steer the mock (all optional):

``x-mock-host``         host name used for routing instead of the Host header
``x-mock-chunks``       number of content events in a stream (default 5)
``x-mock-chunk-delay``  seconds between stream events (default: the server's ``chunk_delay``)
``x-mock-status``       answer this HTTP status with the provider's error body
``x-mock-echo-auth``    ``1``: the error body quotes the credential received (implies 401)
``x-mock-model``        model name to report in the answer
``x-mock-abort-after``  drop the connection after this many stream events (no terminator)
``x-mock-gzip``         ``1``: gzip a non-stream answer when the client accepts gzip;
                        ``force``: gzip it whatever the client accepts (an echo stream too)
``x-mock-echo-key``     send the credential received back, as a provider that quotes a key
                        would (for the proxy's scrubber): ``body`` (or ``1``) in the error body
                        (status ``x-mock-status``, default 401); ``stream`` in an ``error`` event
                        of a 200 server-sent-events stream, cut into two HTTP chunks
                        ``x-mock-split-at`` bytes into the credential (default: its middle; with
                        ``x-mock-gzip: force`` the gzipped event is cut in its middle);
                        ``header`` in ``Location: https://HOST/login?key=...`` and
                        ``x-mock-echo`` headers (status ``x-mock-status``, default 302)
``x-mock-split-at``     see ``x-mock-echo-key: stream``
``x-mock-retry-after``  with ``x-mock-status``: the error answer's ``Retry-After``
``x-mock-drop``         ``1``: close the connection without answering (a dropped connection)
``x-mock-azure-strict`` ``1``: answer Azure hosts only in Azure's request shape (below)

A test can also steer one instance whatever the requests carry: :attr:`MockUpstream.steer`
holds headers applied to every request that does not send them itself (a mock instance per
deployment, each with its own failure mode). With ``x-mock-azure-strict``, a request to an
Azure host must be ``/openai/deployments/{d}/(chat/completions|embeddings)`` or
``/openai/responses``, carry ``?api-version=``, its key in ``api-key`` (not ``Authorization``)
and, if its body names a model, the deployment's name (Azure serves the deployment, whatever
the body says): else Azure's 404, 400 or 401.

Every answer carries ``x-mock-request-id``, the key of :attr:`MockUpstream.sent_times` and
:attr:`Seen.request_id`. Each request also records the TLS server name its connection was
opened with (:attr:`Seen.sni`), and :attr:`MockUpstream.all_seen` keeps every request ever
received (``clear()`` leaves it), over all instances in :attr:`MockUpstream.instances`.

Self-contained on purpose (stdlib + trustme): the proxy's own code must not shape its test double.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import gzip
import itertools
import json
import re
import shutil
import socket
import ssl
import struct
import tempfile
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import trustme

# --------------------------------------------------------------------------------------------
# Hosts and provider families
# --------------------------------------------------------------------------------------------

#: Host name -> provider family. Family names match the provider names of the proxy catalogue.
HOST_FAMILY: dict[str, str] = {
    "api.openai.com": "openai",
    "myres.openai.azure.com": "azure",
    "api.anthropic.com": "anthropic",
    "api.cohere.com": "cohere",
    "api.cohere.ai": "cohere",
    "router.huggingface.co": "huggingface",
    "huggingface.co": "huggingface",
    "api-inference.huggingface.co": "huggingface",
    "api.vectara.io": "vectara",
    "api.perplexity.ai": "perplexity",
    "generativelanguage.googleapis.com": "gemini",
    "api.mistral.ai": "mistral",
    "api.groq.com": "groq",
    "api.together.xyz": "together",
    "api.together.ai": "together",
    "api-inference.together.ai": "together",
    "api.deepseek.com": "deepseek",
    "openrouter.ai": "openrouter",
    "api.x.ai": "xai",
    "api.fireworks.ai": "fireworks",
    "api.endpoints.anyscale.com": "anyscale",
}

#: Every provider host name the mock answers for (and its certificate covers).
PROVIDER_HOSTS: list[str] = list(HOST_FAMILY)

#: Extra names on the server certificate: any Azure resource, and direct loopback callers.
EXTRA_CERT_NAMES: tuple[str, ...] = ("*.openai.azure.com", "localhost", "127.0.0.1")

#: Families that speak the OpenAI wire format (chat completions, responses, embeddings).
OPENAI_COMPATIBLE: frozenset[str] = frozenset(
    {
        "openai",
        "azure",
        "huggingface",
        "perplexity",
        "mistral",
        "groq",
        "together",
        "deepseek",
        "openrouter",
        "xai",
        "fireworks",
        "anyscale",
    }
)

# How a family reports usage in an OpenAI-style chat stream:
# "opt_in": a usage-only chunk (choices: []) only when stream_options.include_usage is set;
# "last": usage on the final (finish_reason) chunk, always;
# "separate": a usage-only chunk, always.
_STREAM_USAGE_MODE: dict[str, str] = {
    "openai": "opt_in",
    "azure": "opt_in",
    "deepseek": "opt_in",
    "huggingface": "opt_in",
    "anyscale": "opt_in",
    "groq": "opt_in",  # plus x_groq.usage on the final chunk, always
    "mistral": "last",
    "together": "last",
    "fireworks": "last",
    "perplexity": "last",
    "xai": "last",
    "openrouter": "separate",
}

#: Azure reports the real model, not the deployment name from the URL.
AZURE_MODEL = "gpt-4o-2024-11-20"

DEFAULT_CHUNKS = 5
_WORDS: tuple[str, ...] = ("Hello", " from", " the", " mock", " upstream", "!")
_EMBEDDING_DIM = 8
_HF_PROVIDERS: tuple[str, ...] = (
    "together",
    "hf-inference",
    "groq",
    "fireworks-ai",
    "novita",
    "nebius",
    "sambanova",
    "cerebras",
)


def chunk_texts(n_chunks: int = DEFAULT_CHUNKS) -> list[str]:
    """The text of each content event of a stream with `n_chunks` events."""
    return [_WORDS[i % len(_WORDS)] for i in range(n_chunks)]


def mock_text(n_chunks: int = DEFAULT_CHUNKS) -> str:
    """The full answer text (non-stream answers use the default chunk count)."""
    return "".join(chunk_texts(n_chunks))


def family_for_host(host: str | None) -> str | None:
    """The provider family serving `host`, or None for a host the mock does not know."""
    if not host:
        return None
    host = host.lower().rstrip(".")
    if host in HOST_FAMILY:
        return HOST_FAMILY[host]
    if host.endswith(".openai.azure.com"):
        return "azure"
    return None


# --------------------------------------------------------------------------------------------
# Usage numbers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Numbers:
    """Token counts one family reports, in normalised terms (see MockUpstream.usage_for)."""

    input: int  # every prompt token, cached ones included
    output: int  # every billed output token, reasoning included
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0


# Distinct numbers per family, so a test notices when usage is attributed to the wrong one.
_NUMBERS: dict[str, _Numbers] = {
    "openai": _Numbers(input=21, output=17, cache_read=8, reasoning=4),
    "azure": _Numbers(input=23, output=19, cache_read=4),
    "groq": _Numbers(input=24, output=13),
    "together": _Numbers(input=27, output=14),
    "fireworks": _Numbers(input=28, output=15, cache_read=3),
    "deepseek": _Numbers(input=26, output=12, cache_read=10, reasoning=3),
    "openrouter": _Numbers(input=29, output=16, cache_read=5),
    "perplexity": _Numbers(input=18, output=22),
    "xai": _Numbers(input=30, output=20, cache_read=6, reasoning=5),
    "mistral": _Numbers(input=16, output=11),
    "huggingface": _Numbers(input=19, output=9),
    "anyscale": _Numbers(input=15, output=8),
    "anthropic": _Numbers(input=43, output=30, cache_read=12, cache_write=6),
    "gemini": _Numbers(input=31, output=23, cache_read=10, reasoning=9),
    "cohere": _Numbers(input=40, output=19),
    "vectara": _Numbers(input=0, output=0),
}
_EMBEDDING_TOKENS = 7
_COHERE_TEMPLATE_TOKENS = 170  # Cohere's `tokens.input_tokens` adds the prompt template

# Provider-reported costs (USD).
_OPENROUTER_COST = 0.000321
_PERPLEXITY_COST = {
    "input_tokens_cost": 0.000018,
    "output_tokens_cost": 0.000022,
    "request_cost": 0.005,
    "total_cost": 0.00504,
}
_XAI_TICKS = 1_234_500  # 1 USD = 1e10 ticks -> 0.00012345 USD


def _openai_chat_usage(family: str) -> dict[str, Any]:
    """The `usage` object of an OpenAI-style chat completion, with the family's quirks."""
    n = _NUMBERS[family]
    usage: dict[str, Any] = {
        "prompt_tokens": n.input,
        "completion_tokens": n.output,
        "total_tokens": n.input + n.output,
        "prompt_tokens_details": {"cached_tokens": n.cache_read, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": n.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    if family == "deepseek":
        usage["prompt_cache_hit_tokens"] = n.cache_read
        usage["prompt_cache_miss_tokens"] = n.input - n.cache_read
    elif family == "openrouter":
        usage["cost"] = _OPENROUTER_COST
        usage["is_byok"] = False
        usage["cost_details"] = {"upstream_inference_cost": None}
    elif family == "perplexity":
        usage["citation_tokens"] = 0
        usage["num_search_queries"] = 1
        usage["search_context_size"] = "low"
        usage["cost"] = dict(_PERPLEXITY_COST)
    elif family == "xai":
        usage["prompt_tokens_details"]["text_tokens"] = n.input
        usage["prompt_tokens_details"]["image_tokens"] = 0
        usage["num_sources_used"] = 0
        usage["cost_in_usd_ticks"] = _XAI_TICKS
    elif family == "groq":
        usage.update(queue_time=0.01, prompt_time=0.002, completion_time=0.02, total_time=0.022)
    elif family == "mistral":
        # Mistral reports the plain three counts (mistralai UsageInfo).
        usage = {
            "prompt_tokens": n.input,
            "completion_tokens": n.output,
            "total_tokens": n.input + n.output,
        }
    return usage


def _responses_usage(family: str) -> dict[str, Any]:
    """The `usage` object of an OpenAI Responses API answer."""
    n = _NUMBERS[family]
    usage: dict[str, Any] = {
        "input_tokens": n.input,
        "input_tokens_details": {"cached_tokens": n.cache_read},
        "output_tokens": n.output,
        "output_tokens_details": {"reasoning_tokens": n.reasoning},
        "total_tokens": n.input + n.output,
    }
    if family == "xai":
        usage["cost_in_usd_ticks"] = _XAI_TICKS
    elif family == "openrouter":
        usage["cost"] = _OPENROUTER_COST
    return usage


def _embeddings_usage() -> dict[str, Any]:
    return {"prompt_tokens": _EMBEDDING_TOKENS, "total_tokens": _EMBEDDING_TOKENS}


def _anthropic_usage() -> dict[str, Any]:
    """Anthropic `usage`: `input_tokens` excludes cache reads and writes."""
    n = _NUMBERS["anthropic"]
    return {
        "input_tokens": n.input - n.cache_read - n.cache_write,
        "cache_creation_input_tokens": n.cache_write,
        "cache_read_input_tokens": n.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": n.cache_write,
            "ephemeral_1h_input_tokens": 0,
        },
        "output_tokens": n.output,
        "service_tier": "standard",
    }


def _gemini_usage(candidates: int | None = None) -> dict[str, Any]:
    """Gemini `usageMetadata`; `candidates` overrides the output count for partial chunks."""
    n = _NUMBERS["gemini"]
    cand = n.output - n.reasoning if candidates is None else candidates
    return {
        "promptTokenCount": n.input,
        "candidatesTokenCount": cand,
        "totalTokenCount": n.input + cand + n.reasoning,
        "cachedContentTokenCount": n.cache_read,
        "thoughtsTokenCount": n.reasoning,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": n.input}],
        "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": n.cache_read}],
    }


def _cohere_usage() -> dict[str, Any]:
    """Cohere v2 `usage` (v1 puts the same under `meta`); bill on `billed_units`."""
    n = _NUMBERS["cohere"]
    return {
        "billed_units": {"input_tokens": n.input, "output_tokens": n.output},
        "tokens": {"input_tokens": n.input + _COHERE_TEMPLATE_TOKENS, "output_tokens": n.output},
        "cached_tokens": 0,
    }


def _default_api(family: str) -> str:
    return {
        "anthropic": "messages",
        "gemini": "generate",
        "cohere": "chat",
        "vectara": "query",
    }.get(family, "chat")


def _raw_usage(family: str, api: str) -> dict[str, Any]:
    if family == "anthropic":
        return _anthropic_usage()
    if family == "gemini":
        return _gemini_usage()
    if family == "cohere":
        return {"meta": _cohere_usage()} if api == "chat_v1" else _cohere_usage()
    if family == "vectara":
        return {}
    if api == "responses":
        return _responses_usage(family)
    if api == "embeddings":
        return _embeddings_usage()
    return _openai_chat_usage(family)


def _cost_usd(family: str) -> float | None:
    if family == "openrouter":
        return _OPENROUTER_COST
    if family == "perplexity":
        return _PERPLEXITY_COST["total_cost"]
    if family == "xai":
        return _XAI_TICKS / 1e10
    return None


# --------------------------------------------------------------------------------------------
# Recorded requests
# --------------------------------------------------------------------------------------------


@dataclass
class Seen:
    """One request as the mock received it (recorded before the answer is written)."""

    host: str  # the routing host: x-mock-host if sent, else the Host header without port
    method: str
    path: str  # with query string
    headers: list[tuple[str, str]]  # in wire order, original case
    body: bytes  # de-chunked
    time: float  # time.monotonic() when the request was fully read
    request_id: str = ""  # also sent back as x-mock-request-id
    sni: str | None = None  # the TLS server name of the connection (None: the client sent none)

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


# --------------------------------------------------------------------------------------------
# Error bodies
# --------------------------------------------------------------------------------------------

_STATUS_TEXT: dict[int, tuple[str, str, str]] = {
    # status: (OpenAI type, Anthropic type, Google status)
    400: ("invalid_request_error", "invalid_request_error", "INVALID_ARGUMENT"),
    401: ("invalid_request_error", "authentication_error", "UNAUTHENTICATED"),
    402: ("insufficient_quota", "billing_error", "FAILED_PRECONDITION"),
    403: ("permission_denied", "permission_error", "PERMISSION_DENIED"),
    404: ("invalid_request_error", "not_found_error", "NOT_FOUND"),
    413: ("invalid_request_error", "request_too_large", "INVALID_ARGUMENT"),
    429: ("requests", "rate_limit_error", "RESOURCE_EXHAUSTED"),
    500: ("server_error", "api_error", "INTERNAL"),
    503: ("server_error", "api_error", "UNAVAILABLE"),
    529: ("server_error", "overloaded_error", "UNAVAILABLE"),
}

_OPENAI_CODES: dict[int, str] = {
    401: "invalid_api_key",
    403: "unsupported_country_region_territory",
    404: "unknown_url",
    429: "rate_limit_exceeded",
}


def _error_body(family: str | None, status: int, message: str, request_id: str) -> Any:
    """The error JSON a provider family sends, so each SDK raises its own exception type."""
    oai_type, ant_type, g_status = _STATUS_TEXT.get(
        status,
        ("server_error" if status >= 500 else "invalid_request_error", "api_error", "UNKNOWN"),
    )
    if family == "anthropic":
        return {
            "type": "error",
            "error": {"type": ant_type, "message": message},
            "request_id": f"req_{request_id}",
        }
    if family == "gemini":
        return {"error": {"code": status, "message": message, "status": g_status}}
    if family == "cohere":
        return {"message": message}
    if family == "huggingface":
        return {"error": message}
    if family == "vectara":
        return {"messages": [message], "request_id": request_id}
    if family == "mistral":
        return {"message": message, "request_id": request_id}
    if family == "azure":
        return {"error": {"code": str(status), "message": message}}
    if family == "openrouter":
        return {"error": {"code": status, "message": message, "metadata": {}}}
    return {
        "error": {
            "message": message,
            "type": oai_type,
            "param": None,
            "code": _OPENAI_CODES.get(status),
        }
    }


def _received_credential(seen: Seen) -> str | None:
    """The credential a request carried, in the order providers look for it."""
    auth = seen.header("authorization")
    if auth:
        return auth.split(" ", 1)[1] if auth.lower().startswith("bearer ") else auth
    for name in ("x-api-key", "api-key", "x-goog-api-key"):
        if value := seen.header(name):
            return value
    query = parse_qs(urlsplit(seen.path).query)
    if keys := query.get("key"):
        return keys[0]
    return None


# --------------------------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------------------------

_GEMINI_PATH = re.compile(
    r"^/(?:v1|v1beta|v1alpha)/(?:models|tunedModels)/(?P<model>[^/:]+)"
    r":(?P<method>generateContent|streamGenerateContent|countTokens|embedContent)$"
)
_HF_MODEL_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+(?:/[^/]+)?)(?:/revision/[^/]+)?$")
_MODELS_LIST = re.compile(r"^(?:/[\w.-]+)*/models$")
_VECTARA_QUERY = re.compile(r"^/v2/(?:query|corpora/[^/]+/query|chats(?:/[^/]+/turns)?)$")


def _guess_openai_family(path: str) -> str:
    """Family of an OpenAI-style request to an unknown host, from provider-specific prefixes."""
    if path.startswith("/openai/deployments/"):
        return "azure"
    if path.startswith("/openai/v1/"):
        return "groq"
    if path.startswith("/inference/v1/"):
        return "fireworks"
    if path.startswith("/api/v1/"):
        return "openrouter"
    return "openai"


def _route(host: str, method: str, path: str) -> tuple[str, str] | None:
    """(endpoint, family) for a request, or None for a 404.

    A known host restricts the endpoints to what that provider serves; an unknown host (a direct
    call to 127.0.0.1 without x-mock-host) is routed by path alone.
    """
    family = family_for_host(host)
    known = family is not None
    if method == "GET":
        if host == "huggingface.co" or not known:
            if _HF_MODEL_INFO.match(path):
                return "hf_model_info", "huggingface"
            if path == "/api/agent-harnesses":
                # huggingface_hub >= 2.4 fetches this registry (at most daily) for its user agent.
                return "hf_agent_harnesses", "huggingface"
        if host == "huggingface.co" or not _MODELS_LIST.match(path):
            return None
        if family == "gemini" or (not known and path.startswith("/v1beta/")):
            return "models_list", "gemini"
        if family in ("anthropic", "cohere"):
            return "models_list", family
        if family is None or family in OPENAI_COMPATIBLE:
            return "models_list", family or _guess_openai_family(path)
        return None
    if method != "POST":
        return None
    if (m := _GEMINI_PATH.match(path)) and family in (None, "gemini"):
        return f"gemini_{m.group('method')}", "gemini"
    # Anthropic's Messages API, also offered by DeepSeek (/anthropic) and xAI.
    if path.endswith("/v1/messages") and family in (None, "anthropic", "deepseek", "xai"):
        return "messages", "anthropic"
    if family in (None, "cohere"):
        if path == "/v2/chat":
            return "cohere_v2_chat", "cohere"
        if path == "/v1/chat":
            return "cohere_v1_chat", "cohere"
    if family == "vectara" and _VECTARA_QUERY.match(path):
        return "vectara_query", "vectara"
    if host == "huggingface.co":
        return None  # the Hub API serves no inference
    if family is None or family in OPENAI_COMPATIBLE:
        fam = family if known and family else _guess_openai_family(path)
        if path.endswith("/chat/completions"):
            return "chat", fam
        if path.endswith("/responses"):
            return "responses", fam
        if path.endswith("/embeddings"):
            return "embeddings", fam
    return None


# --------------------------------------------------------------------------------------------
# Payload builders
# --------------------------------------------------------------------------------------------


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event; `data` is JSON-encoded unless it is already a string."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


@dataclass
class _Req:
    """What a payload builder needs to know about the request."""

    request_id: str
    family: str
    path: str
    query: dict[str, list[str]]
    body: Any
    model: str
    n_chunks: int
    created: int


def _openai_chat(req: _Req) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": mock_text()}
    if req.family != "mistral":
        message.update(refusal=None, annotations=[])
    answer: dict[str, Any] = {
        "id": f"chatcmpl-{req.request_id}",
        "object": "chat.completion",
        "created": req.created,
        "model": req.model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": _openai_chat_usage(req.family),
    }
    if req.family in ("openai", "azure"):
        answer.update(service_tier="default", system_fingerprint="fp_mock")
    if req.family == "groq":
        answer["x_groq"] = {"id": f"req_{req.request_id}"}
    if req.family == "perplexity":
        answer.update(citations=[], search_results=[])
    return answer


def _include_usage(body: Any) -> bool:
    options = body.get("stream_options") if isinstance(body, dict) else None
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _openai_chat_stream(req: _Req) -> Iterator[bytes]:
    """OpenAI-style chat chunks: content x N, finish chunk, optional usage chunk, [DONE]."""
    mode = _STREAM_USAGE_MODE.get(req.family, "opt_in")
    include = _include_usage(req.body)
    usage = _openai_chat_usage(req.family)

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": f"chatcmpl-{req.request_id}",
            "object": "chat.completion.chunk",
            "created": req.created,
            "model": req.model,
            "choices": choices,
        }
        if req.family in ("openai", "azure"):
            data["system_fingerprint"] = "fp_mock"
        if mode == "opt_in" and include:
            data["usage"] = None  # as OpenAI: null on every chunk but the usage chunk
        data.update(extra)
        return data

    if req.family == "azure":
        # Azure opens with a prompt-filter chunk that has no choices and blank metadata.
        yield _sse(
            {
                "choices": [],
                "created": 0,
                "id": "",
                "model": "",
                "object": "",
                "prompt_filter_results": [
                    {"prompt_index": 0, "content_filter_results": {"hate": {"filtered": False}}}
                ],
            }
        )
    for i, text in enumerate(chunk_texts(req.n_chunks)):
        delta: dict[str, Any] = {"content": text}
        if i == 0:
            delta = {"role": "assistant", **delta}
        extra: dict[str, Any] = {}
        if i == 0 and req.family == "groq":
            extra["x_groq"] = {"id": f"req_{req.request_id}"}
        yield _sse(
            chunk(
                [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}],
                **extra,
            )
        )
    final_extra: dict[str, Any] = {}
    if mode == "last":
        final_extra["usage"] = usage
    if req.family == "groq":
        final_extra["x_groq"] = {"id": f"req_{req.request_id}", "usage": usage}
    yield _sse(
        chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}], **final_extra)
    )
    if mode == "separate" or (mode == "opt_in" and include):
        yield _sse(chunk([], usage=usage))
    yield b"data: [DONE]\n\n"


def _embeddings(req: _Req) -> dict[str, Any]:
    inputs = req.body.get("input") if isinstance(req.body, dict) else None
    count = (
        len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
    )
    as_base64 = isinstance(req.body, dict) and req.body.get("encoding_format") == "base64"
    data = []
    for index in range(count):
        vector = [round(0.01 * (index + 1) * (k + 1), 6) for k in range(_EMBEDDING_DIM)]
        embedding: Any = vector
        if as_base64:
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return {"object": "list", "data": data, "model": req.model, "usage": _embeddings_usage()}


def _responses_message(req: _Req, text: str, status: str) -> dict[str, Any]:
    return {
        "id": f"msg_{req.request_id}",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [] if status == "in_progress" else [_output_text(text)],
    }


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _responses_object(req: _Req, *, done: bool) -> dict[str, Any]:
    """An OpenAI Responses API `response` object (in progress, or completed with usage)."""
    text = "".join(chunk_texts(req.n_chunks))
    return {
        "id": f"resp_{req.request_id}",
        "object": "response",
        "created_at": req.created,
        "status": "completed" if done else "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": req.model,
        "output": [_responses_message(req, text, "completed")] if done else [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": _responses_usage(req.family) if done else None,
        "user": None,
        "metadata": {},
    }


def _responses_stream(req: _Req) -> Iterator[bytes]:
    """Responses API events, response.created ... response.completed (no [DONE], as OpenAI)."""
    seq = itertools.count()
    item_id = f"msg_{req.request_id}"
    texts = chunk_texts(req.n_chunks)
    full = "".join(texts)

    def event(kind: str, **fields: Any) -> bytes:
        return _sse({"type": kind, "sequence_number": next(seq), **fields}, event=kind)

    yield event("response.created", response=_responses_object(req, done=False))
    yield event("response.in_progress", response=_responses_object(req, done=False))
    yield event(
        "response.output_item.added",
        output_index=0,
        item=_responses_message(req, "", "in_progress"),
    )
    yield event(
        "response.content_part.added",
        item_id=item_id,
        output_index=0,
        content_index=0,
        part=_output_text(""),
    )
    for text in texts:
        yield event(
            "response.output_text.delta",
            item_id=item_id,
            output_index=0,
            content_index=0,
            delta=text,
            logprobs=[],
        )
    yield event(
        "response.output_text.done",
        item_id=item_id,
        output_index=0,
        content_index=0,
        text=full,
        logprobs=[],
    )
    yield event(
        "response.content_part.done",
        item_id=item_id,
        output_index=0,
        content_index=0,
        part=_output_text(full),
    )
    yield event(
        "response.output_item.done",
        output_index=0,
        item=_responses_message(req, full, "completed"),
    )
    yield event("response.completed", response=_responses_object(req, done=True))


def _anthropic_message(req: _Req) -> dict[str, Any]:
    return {
        "id": f"msg_{req.request_id}",
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": [{"type": "text", "text": mock_text()}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": _anthropic_usage(),
    }


def _anthropic_stream(req: _Req) -> Iterator[bytes]:
    """Anthropic SSE: message_start ... message_delta (cumulative usage), message_stop."""
    usage = _anthropic_usage()
    start_usage = {**usage, "output_tokens": 1}
    start = {**_anthropic_message(req), "content": [], "stop_reason": None, "usage": start_usage}
    yield _sse({"type": "message_start", "message": start}, "message_start")
    yield _sse(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        "content_block_start",
    )
    yield _sse({"type": "ping"}, "ping")
    for text in chunk_texts(req.n_chunks):
        yield _sse(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": text},
            },
            "content_block_delta",
        )
    yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    delta_usage = {
        key: usage[key]
        for key in (
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "output_tokens",
        )
    }
    yield _sse(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": delta_usage,
        },
        "message_delta",
    )
    yield _sse({"type": "message_stop"}, "message_stop")


def _gemini_chunk(req: _Req, text: str, usage: dict[str, Any], final: bool) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "content": {"parts": [{"text": text}], "role": "model"},
        "index": 0,
    }
    if final:
        candidate["finishReason"] = "STOP"
    return {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": req.model,
        "responseId": req.request_id,
    }


def _gemini_stream_chunks(req: _Req) -> list[dict[str, Any]]:
    """Stream chunks; each has usageMetadata, growing output counts, the last one final."""
    texts = chunk_texts(req.n_chunks) or [""]
    n = _NUMBERS["gemini"]
    final_candidates = n.output - n.reasoning
    chunks = []
    for i, text in enumerate(texts):
        last = i == len(texts) - 1
        partial = final_candidates if last else max(1, final_candidates * (i + 1) // len(texts))
        chunks.append(_gemini_chunk(req, text, _gemini_usage(partial), last))
    return chunks


def _gemini_stream(req: _Req) -> Iterator[bytes]:
    chunks = _gemini_stream_chunks(req)
    if req.query.get("alt") == ["sse"]:
        for item in chunks:
            yield b"data: " + _dumps(item) + b"\r\n\r\n"
        return
    # Without alt=sse Gemini streams one JSON array, element by element.
    for i, item in enumerate(chunks):
        yield (b"[" if i == 0 else b",\r\n") + _dumps(item)
    yield b"]"


def _cohere_v2_chat(req: _Req) -> dict[str, Any]:
    return {
        "id": req.request_id,
        "finish_reason": "COMPLETE",
        "message": {"role": "assistant", "content": [{"type": "text", "text": mock_text()}]},
        "usage": _cohere_usage(),
    }


def _cohere_v2_stream(req: _Req) -> Iterator[bytes]:
    """Cohere v2 SSE: event name and `type` in data; usage in message-end `delta.usage`."""

    def event(kind: str, **fields: Any) -> bytes:
        return _sse({"type": kind, **fields}, event=kind)

    yield event(
        "message-start",
        id=req.request_id,
        delta={
            "message": {
                "role": "assistant",
                "content": [],
                "tool_plan": "",
                "tool_calls": [],
                "citations": [],
            }
        },
    )
    yield event(
        "content-start", index=0, delta={"message": {"content": {"type": "text", "text": ""}}}
    )
    for text in chunk_texts(req.n_chunks):
        yield event("content-delta", index=0, delta={"message": {"content": {"text": text}}})
    yield event("content-end", index=0)
    yield event(
        "message-end",
        id=req.request_id,
        delta={"finish_reason": "COMPLETE", "usage": _cohere_usage()},
    )


def _cohere_v1_chat(req: _Req, text: str | None = None) -> dict[str, Any]:
    answer_text = mock_text() if text is None else text
    message = req.body.get("message", "") if isinstance(req.body, dict) else ""
    usage = _cohere_usage()
    return {
        "response_id": req.request_id,
        "text": answer_text,
        "generation_id": f"gen-{req.request_id}",
        "chat_history": [
            {"role": "USER", "message": message},
            {"role": "CHATBOT", "message": answer_text},
        ],
        "finish_reason": "COMPLETE",
        "meta": {"api_version": {"version": "1"}, **usage},
    }


def _cohere_v1_stream(req: _Req) -> Iterator[bytes]:
    """Cohere v1 stream: newline-delimited JSON (not SSE), ending with stream-end."""
    texts = chunk_texts(req.n_chunks)
    yield (
        _dumps(
            {
                "is_finished": False,
                "event_type": "stream-start",
                "generation_id": f"gen-{req.request_id}",
            }
        )
        + b"\n"
    )
    for text in texts:
        yield _dumps({"is_finished": False, "event_type": "text-generation", "text": text}) + b"\n"
    yield (
        _dumps(
            {
                "is_finished": True,
                "event_type": "stream-end",
                "finish_reason": "COMPLETE",
                "response": _cohere_v1_chat(req, "".join(texts)),
            }
        )
        + b"\n"
    )


def _hf_model_info(repo: str) -> dict[str, Any]:
    """A Hub `model_info` answer with the provider mapping InferenceClient needs."""
    return {
        "_id": "mock0000000000000000",
        "id": repo,
        "modelId": repo,
        "author": repo.split("/")[0] if "/" in repo else None,
        "private": False,
        "gated": False,
        "disabled": False,
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "text-generation", "conversational"],
        "inference": "warm",
        "inferenceProviderMapping": {
            provider: {"status": "live", "providerId": repo, "task": "conversational"}
            for provider in _HF_PROVIDERS
        },
    }


def _models_list(family: str) -> dict[str, Any]:
    """GET .../models in the family's format (SDK clients use it as a cheap key check)."""
    if family == "anthropic":
        model = "claude-sonnet-4-5"
        return {
            "data": [
                {
                    "type": "model",
                    "id": model,
                    "display_name": "Claude Sonnet 4.5",
                    "created_at": "2025-09-29T00:00:00Z",
                }
            ],
            "has_more": False,
            "first_id": model,
            "last_id": model,
        }
    if family == "gemini":
        return {
            "models": [
                {
                    "name": "models/gemini-2.5-flash",
                    "displayName": "Gemini 2.5 Flash",
                    "supportedGenerationMethods": ["generateContent", "countTokens"],
                }
            ]
        }
    if family == "cohere":
        return {"models": [{"name": "command-a-03-2025", "endpoints": ["chat"]}]}
    return {
        "object": "list",
        "data": [
            {
                "id": _LIST_MODEL.get(family, "mock-model"),
                "object": "model",
                "created": 0,
                "owned_by": family,
            }
        ],
    }


_LIST_MODEL: dict[str, str] = {
    "openai": "gpt-4o-mini",
    "azure": AZURE_MODEL,
    "mistral": "mistral-small-latest",
    "groq": "llama-3.1-8b-instant",
    "deepseek": "deepseek-chat",
    "xai": "grok-4",
}


def _vectara_query(req: _Req) -> dict[str, Any]:
    # Vectara reports no token counts: it bills per query.
    return {
        "summary": mock_text(),
        "response_language": "eng",
        "factual_consistency_score": 0.9,
        "search_results": [
            {
                "text": "Mock search result.",
                "score": 0.9,
                "part_metadata": {},
                "document_metadata": {},
                "document_id": "doc-1",
            }
        ],
    }


# --------------------------------------------------------------------------------------------
# HTTP server
# --------------------------------------------------------------------------------------------

# Errors that only mean the client went away; not worth recording.
_DISCONNECTS = (
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
    ssl.SSLError,
    TimeoutError,
)


_PlainBuilder = Callable[[_Req], Any]
_StreamBuilder = Callable[[_Req], Iterator[bytes]]


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that does the TLS handshake in the per-connection thread.

    Wrapping the listening socket would run every handshake in the accept loop, where one slow
    or failing client would stall all others.
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], ssl_ctx: ssl.SSLContext, owner: MockUpstream):
        self.ssl_ctx = ssl_ctx
        self.owner = owner
        self.live: set[socket.socket] = set()
        self.live_lock = threading.Lock()
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        raw: socket.socket = request
        # Stream events are small writes that must leave at once, not wait for Nagle.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.settimeout(10)
        try:
            tls = self.ssl_ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        with self.live_lock:
            self.live.add(tls)
        try:
            _Handler(tls, client_address, self)
        except _DISCONNECTS:
            pass
        finally:
            with self.live_lock:
                self.live.discard(tls)
            with contextlib.suppress(OSError):
                tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Connection-level failures are the client's business; anything else is recorded by
        # the handler itself, so stay quiet instead of printing to stderr.
        pass

    def close_live(self) -> None:
        """Drop open keep-alive connections, so a stopped mock holds no sockets."""
        with self.live_lock:
            conns = list(self.live)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """Parses one request after another on a keep-alive connection and routes each."""

    protocol_version = "HTTP/1.1"
    server_version = "mock-upstream/1.0"
    sys_version = ""
    timeout = 30  # idle keep-alive connections end after this many seconds
    server: _Server
    _chunked: bool = True  # whether the current stream uses chunked transfer-encoding
    _started: bool = False  # whether the current answer's status line has been written

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read `seen`, not stderr

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def send_response(self, code: int, message: str | None = None) -> None:
        self._started = True
        super().send_response(code, message)

    # ---- plumbing --------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_bytes(
        self,
        status: int,
        body: bytes,
        content_type: str,
        request_id: str,
        extra: dict[str, str] | None = None,
    ) -> None:
        gzip_mode = self.headers.get("x-mock-gzip")
        if (
            gzip_mode == "force"
            or (gzip_mode == "1" and "gzip" in self.headers.get("Accept-Encoding", ""))
        ) and body:
            body = gzip.compress(body)
            extra = {**(extra or {}), "Content-Encoding": "gzip"}
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-mock-request-id", request_id)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.server.owner._record_sent(request_id)

    def _send_json(self, status: int, obj: Any, request_id: str, **extra: str) -> None:
        self._send_bytes(status, _dumps(obj), "application/json", request_id, extra or None)

    def _write_chunk(self, data: bytes) -> None:
        if self._chunked:
            self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        else:
            self.wfile.write(data)
        self.wfile.flush()

    def _send_stream(
        self,
        events: Iterable[bytes],
        content_type: str,
        request_id: str,
        extra: dict[str, str] | None = None,
    ) -> None:
        """Write each event as its own HTTP chunk, flushed, with a pause between events."""
        owner = self.server.owner
        delay = _float_header(self.headers.get("x-mock-chunk-delay"), owner.chunk_delay)
        abort_after = _int_header(self.headers.get("x-mock-abort-after"))
        # HTTP/1.0 has no chunked encoding: stream raw and mark the end by closing.
        self._chunked = self.request_version == "HTTP/1.1"
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("x-mock-request-id", request_id)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        if self._chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        for index, data in enumerate(events):
            if abort_after is not None and index >= abort_after:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if index and delay > 0:
                time.sleep(delay)
            self._write_chunk(data)
            owner._record_sent(request_id)
        if self._chunked:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    # ---- request handling ------------------------------------------------------------------

    def _dispatch(self) -> None:
        owner = self.server.owner
        body = self._read_body()
        raw_host = self.headers.get("x-mock-host") or self.headers.get("Host") or ""
        host = _strip_port(raw_host).lower()
        request_id = owner._next_id()
        seen = Seen(
            host=host,
            method=self.command,
            path=self.path,
            headers=list(self.headers.items()),
            body=body,
            time=time.monotonic(),
            request_id=request_id,
            sni=owner._sni.get(self.connection),
        )
        owner._record_seen(seen)
        for name, value in owner.steer.items():
            if name not in self.headers:
                self.headers[name] = value
        self._started = False
        if self.headers.get("x-mock-drop") == "1":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        try:
            self._answer(seen, host)
        except _DISCONNECTS:
            self.close_connection = True
        except Exception:
            owner.errors.append(traceback.format_exc())
            self.close_connection = True
            if not self._started:
                try:
                    self._send_json(
                        500, _error_body(None, 500, "mock upstream crashed", request_id), request_id
                    )
                except OSError:
                    self.close_connection = True

    def _answer(self, seen: Seen, host: str) -> None:
        body = seen.body
        request_id = seen.request_id
        split = urlsplit(self.path)
        path = split.path
        route = _route(host, self.command, path)
        family = route[1] if route else family_for_host(host)

        if echo_key := self.headers.get("x-mock-echo-key"):
            self._echo_key(seen, family, echo_key)
            return

        status = _int_header(self.headers.get("x-mock-status"))
        echo = self.headers.get("x-mock-echo-auth") == "1"
        if status is None and echo:
            status = 401
        if status is not None and status >= 300:
            message = "Incorrect API key provided." if status == 401 else f"Mock error {status}."
            if echo:
                message = f"Incorrect API key provided: {_received_credential(seen) or '<none>'}"
            extra = {}
            if retry_after := self.headers.get("x-mock-retry-after"):
                extra["Retry-After"] = retry_after
            body = _error_body(family, status, message, request_id)
            self._send_json(status, body, request_id, **extra)
            return
        strict = family == "azure" and self.headers.get("x-mock-azure-strict") == "1"
        if strict and (problem := _azure_problem(seen, path, split.query)):
            status, message = problem
            self._send_json(status, _error_body(family, status, message, request_id), request_id)
            return

        if route is None:
            message = f"Unknown request URL: {self.command} {path}. (mock upstream)"
            self._send_json(404, _error_body(None, 404, message, request_id), request_id)
            return
        endpoint, family = route

        if endpoint == "models_list":
            self._send_json(200, _models_list(family), request_id)
            return
        if endpoint == "hf_agent_harnesses":
            registry = {"standardEnvVars": ["AI_AGENT", "AGENT"], "harnesses": {}}
            self._send_json(200, registry, request_id)
            return
        if endpoint == "hf_model_info":
            match = _HF_MODEL_INFO.match(path)
            assert match is not None
            self._send_json(200, _hf_model_info(match.group("repo")), request_id)
            return

        try:
            parsed: Any = json.loads(body) if body else {}
        except ValueError:
            self._send_json(
                400, _error_body(family, 400, "Request body is not JSON.", request_id), request_id
            )
            return

        n_chunks = _int_header(self.headers.get("x-mock-chunks"))
        req = _Req(
            request_id=request_id,
            family=family,
            path=path,
            query=parse_qs(split.query),
            body=parsed,
            model=self._model(endpoint, family, path, parsed),
            n_chunks=DEFAULT_CHUNKS if n_chunks is None else max(0, min(n_chunks, 100_000)),
            created=int(time.time()),
        )
        stream = isinstance(parsed, dict) and parsed.get("stream") is True
        sse = "text/event-stream; charset=utf-8"

        builders: dict[str, tuple[_PlainBuilder, _StreamBuilder | None]] = {
            "chat": (_openai_chat, _openai_chat_stream),
            "responses": (lambda r: _responses_object(r, done=True), _responses_stream),
            "embeddings": (_embeddings, None),
            "messages": (_anthropic_message, _anthropic_stream),
            "cohere_v2_chat": (_cohere_v2_chat, _cohere_v2_stream),
            "cohere_v1_chat": (_cohere_v1_chat, _cohere_v1_stream),
            "vectara_query": (_vectara_query, None),
        }
        if endpoint == "responses" and not stream:
            # A non-stream Responses answer holds the default-length text, like other APIs.
            req.n_chunks = DEFAULT_CHUNKS
        if endpoint.startswith("gemini_"):
            method = endpoint.removeprefix("gemini_")
            if method == "streamGenerateContent":
                content_type = (
                    "text/event-stream" if req.query.get("alt") == ["sse"] else "application/json"
                )
                self._send_stream(_gemini_stream(req), content_type, request_id)
            elif method == "generateContent":
                chunk = _gemini_chunk(req, mock_text(), _gemini_usage(), True)
                self._send_json(200, chunk, request_id)
            elif method == "countTokens":
                self._send_json(200, {"totalTokens": _NUMBERS["gemini"].input}, request_id)
            else:
                values = [round(0.01 * (k + 1), 6) for k in range(_EMBEDDING_DIM)]
                self._send_json(200, {"embedding": {"values": values}}, request_id)
            return

        plain, streamed = builders[endpoint]
        if stream and streamed is not None:
            content_type = "application/stream+json" if endpoint == "cohere_v1_chat" else sse
            self._send_stream(streamed(req), content_type, request_id)
        else:
            self._send_json(200, plain(req), request_id)

    def _echo_key(self, seen: Seen, family: str | None, mode: str) -> None:
        """Answer with the credential received in it (see ``x-mock-echo-key``)."""
        credential = _received_credential(seen) or "<none>"
        request_id = seen.request_id
        status = _int_header(self.headers.get("x-mock-status"))
        message = f"Incorrect API key provided: {credential}"
        if mode == "stream":
            event = _sse(_error_body(family, 401, message, request_id), "error")
            extra = None
            if self.headers.get("x-mock-gzip") == "force":
                event = gzip.compress(event)
                cut = len(event) // 2
                extra = {"Content-Encoding": "gzip"}
            else:
                split_at = _int_header(self.headers.get("x-mock-split-at"))
                where = event.index(credential.encode())
                cut = where + (len(credential) // 2 if split_at is None else split_at)
            parts = [event[:cut], event[cut:]]
            self._send_stream(parts, "text/event-stream; charset=utf-8", request_id, extra)
        elif mode == "header":
            status = 302 if status is None else status
            body = _error_body(family, status, "Sign in again.", request_id)
            location = f"https://{seen.host or 'localhost'}/login?key={credential}"
            self._send_json(
                status, body, request_id, **{"Location": location, "x-mock-echo": credential}
            )
        else:
            status = 401 if status is None else status
            self._send_json(status, _error_body(family, status, message, request_id), request_id)

    def _model(self, endpoint: str, family: str, path: str, body: Any) -> str:
        """The model name to report: x-mock-model, else what the provider would say."""
        if override := self.headers.get("x-mock-model"):
            return override
        if endpoint.startswith("gemini_"):
            match = _GEMINI_PATH.match(path)
            return match.group("model") if match else "gemini-mock"
        if family == "azure":
            return AZURE_MODEL
        model = body.get("model") if isinstance(body, dict) else None
        return model if isinstance(model, str) and model else "mock-model"


_AZURE_PATH = re.compile(
    r"^/openai/(?:deployments/(?P<deployment>[^/]+)/(?:chat/completions|embeddings)|responses)$"
)


def _azure_problem(seen: Seen, path: str, query: str) -> tuple[int, str] | None:
    """What Azure OpenAI would refuse in this request's shape, as (status, message)."""
    match = _AZURE_PATH.match(path)
    if match is None:
        return 404, "Resource not found"
    if not parse_qs(query).get("api-version"):
        return 400, "Missing required query parameter: api-version"
    if not seen.header("api-key") or seen.header("authorization"):
        return 401, "Access denied due to missing subscription key (api-key header)."
    try:
        body = json.loads(seen.body) if seen.body else {}
    except ValueError:
        return 400, "Request body is not JSON."
    deployment = match.group("deployment")
    named = body.get("model") if isinstance(body, dict) else None
    if deployment is None and not named:
        return 400, "The Responses API needs the deployment's name as model."
    if deployment is not None and named is not None and named != deployment:
        return 400, f"model {named!r} is not deployment {deployment!r}"
    return None


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host[1 : host.index("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _int_header(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _float_header(value: str | None, default: float) -> float:
    try:
        return float(value) if value is not None else default
    except ValueError:
        return default


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


class MockUpstream:
    """The fake provider: start() it, point the proxy's upstream connections at `address`.

    `seen`, `sent_times` and `errors` may be read from any thread; `clear()` empties them.
    `all_seen` is never cleared: every request this instance ever received, for checks over a
    whole test session (see `instances`).
    """

    #: Every instance made in this process, in creation order (for session-wide checks).
    instances: ClassVar[list[MockUpstream]] = []

    def __init__(
        self, ca: trustme.CA, *, chunk_delay: float = 0.05, bind: str = "127.0.0.1"
    ) -> None:
        self.ca = ca
        self.chunk_delay = chunk_delay
        self._bind = bind
        self.seen: list[Seen] = []
        self.all_seen: list[Seen] = []
        # TLS server name per live connection, as the handshake's SNI callback saw it.
        self._sni: weakref.WeakKeyDictionary[socket.socket, str | None] = (
            weakref.WeakKeyDictionary()
        )
        self.sent_times: dict[str, list[float]] = {}
        #: Tracebacks of handler crashes (a test can assert this stays empty).
        self.errors: list[str] = []
        #: Steering headers (``x-mock-status``, ``x-mock-drop``, …) applied to every request
        #: that does not carry them itself; a test sets and clears them.
        self.steer: dict[str, str] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._tmpdir = Path(tempfile.mkdtemp(prefix="mock-upstream-"))
        self.ca_pem_path: Path = self._tmpdir / "upstream-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_pem_path))
        self._cert = ca.issue_cert(*PROVIDER_HOSTS, *EXTRA_CERT_NAMES)
        MockUpstream.instances.append(self)

    # ---- lifecycle -------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._cert.configure_cert(ctx)
        # We speak HTTP/1.1 only; advertising it keeps h2-capable clients from choosing h2.
        ctx.set_alpn_protocols(["http/1.1"])
        ctx.sni_callback = self._on_sni
        return ctx

    def _on_sni(self, tls: Any, server_name: str | None, ctx: ssl.SSLContext) -> None:
        """Record the server name a connection asks for (called during its handshake)."""
        with self._lock:
            self._sni[tls] = server_name

    def start(self) -> None:
        """Bind a free loopback port and serve in a daemon thread."""
        if self._server is not None:
            return
        self._server = _Server((self._bind, 0), self._ssl_context(), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="mock-upstream",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, drop open connections and delete the CA file."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.close_live()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> MockUpstream:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        """("127.0.0.1", port) once started."""
        if self._server is None:
            raise RuntimeError("MockUpstream is not started")
        host, port = self._server.server_address[:2]
        return (str(host), int(port))

    @property
    def port(self) -> int:
        return self.address[1]

    def url(self, path: str = "") -> str:
        """https://localhost:<port><path>, for clients that call the mock directly."""
        return f"https://localhost:{self.port}{path}"

    # ---- records ---------------------------------------------------------------------------

    def _next_id(self) -> str:
        with self._lock:
            return f"mock-{next(self._ids):06d}"

    def _record_seen(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)
            self.all_seen.append(seen)
            self.sent_times[seen.request_id] = []

    def _record_sent(self, request_id: str) -> None:
        now = time.monotonic()
        with self._lock:
            self.sent_times.setdefault(request_id, []).append(now)

    def clear(self) -> None:
        """Forget recorded requests, send times and errors (the list objects are kept)."""
        with self._lock:
            self.seen.clear()
            self.sent_times.clear()
            self.errors.clear()

    def requests(self, *, host: str | None = None, path_contains: str = "") -> list[Seen]:
        """A snapshot of `seen`, optionally filtered by routing host and path substring."""
        with self._lock:
            items = list(self.seen)
        return [s for s in items if (host is None or s.host == host) and path_contains in s.path]

    # ---- expected numbers ------------------------------------------------------------------

    def usage_for(self, provider_family: str, api: str | None = None) -> dict[str, Any]:
        """The usage the mock reports for `provider_family` (a name from HOST_FAMILY's values).

        `api` picks the wire format of `raw`: "chat" (default for OpenAI-compatible families),
        "responses", "embeddings", "messages" (anthropic), "generate" (gemini), "chat" or
        "chat_v1" (cohere v2 / v1), "query" (vectara). The numbers do not depend on the stream
        mode or chunk count. Normalised keys:

        * input_tokens: every prompt token, cache reads and writes included (Anthropic's
          input + cache_read + cache_creation; Cohere's billed input).
        * output_tokens: every billed output token, reasoning/thinking included (Gemini's
          candidates + thoughts).
        * cache_read_tokens, cache_write_tokens, reasoning_tokens: parts of the above.
        * total_tokens: input_tokens + output_tokens.
        * cost_usd: the provider-reported cost (OpenRouter, Perplexity, xAI), else None.
        * raw: the usage object exactly as sent (for Cohere v1, `{"meta": ...}`).
        """
        family = provider_family.lower()
        if family not in _NUMBERS:
            raise KeyError(f"unknown provider family {provider_family!r}")
        api = api or _default_api(family)
        embeddings = api == "embeddings"
        n = _Numbers(input=_EMBEDDING_TOKENS, output=0) if embeddings else _NUMBERS[family]
        cost = None if api == "embeddings" else _cost_usd(family)
        if api == "responses" and family == "perplexity":
            cost = None  # Perplexity's cost object is part of chat completions only
        return {
            "family": family,
            "api": api,
            "input_tokens": n.input,
            "output_tokens": n.output,
            "cache_read_tokens": n.cache_read,
            "cache_write_tokens": n.cache_write,
            "reasoning_tokens": n.reasoning,
            "total_tokens": n.input + n.output,
            "cost_usd": cost,
            "raw": copy.deepcopy(_raw_usage(family, api)),
        }
