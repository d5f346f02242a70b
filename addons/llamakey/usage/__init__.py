"""Read token usage out of provider requests and answers, plain or streamed.

Pure functions plus one small state machine (`StreamMeter`); no mitmproxy imports. Every provider
family reports usage differently (see the reference sheet, section 5); this module normalises them
all to one `Usage`:

* `input_tokens` never includes cache reads or writes (OpenAI-style `prompt_tokens` does, so the
  cached part is subtracted; Anthropic's `input_tokens` already excludes it);
* `output_tokens` includes reasoning tokens wherever the provider bills them as output (Gemini
  thoughts; xAI and Perplexity report reasoning beside `completion_tokens`, so it is added).

The stream meter runs on mitmproxy's event loop for every chunk of every streamed answer, so it only
decodes JSON for the few lines that can carry usage or a finish reason (found with one C-level regex
scan), and buffers nothing but the incomplete trailing line.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import unquote

__all__ = [
    "INCLUDE_USAGE_PROVIDERS",
    "StreamMeter",
    "Usage",
    "api_flavor",
    "ensure_stream_usage",
    "is_stream_request",
    "request_model",
    "usage_from_body",
]

log = logging.getLogger(__name__)

JSONObject = dict[str, Any]

# Providers whose OpenAI-style chat streams carry usage only when the request asks for it with
# `stream_options.include_usage` (OpenAI, Azure, DeepSeek; HF router backends are TGI/vLLM and
# friends, which honour it; AnyScale was vLLM). The others send usage unasked (Groq, Together,
# Fireworks, Mistral, OpenRouter, Perplexity, xAI), so the request is left alone for them.
INCLUDE_USAGE_PROVIDERS = frozenset({"openai", "azure", "deepseek", "huggingface", "anyscale"})

# Providers whose chat usage counts reasoning (and, for Perplexity, citation) tokens beside
# `completion_tokens` rather than inside it, and bill them as output (genai-prices reads them so).
_REASONING_BESIDE_OUTPUT = frozenset({"xai", "perplexity"})

_GEMINI_VERBS = frozenset(
    {"generateContent", "streamGenerateContent", "embedContent", "batchEmbedContents"}
)
_GEMINI_MODEL_RE = re.compile(r"/models/([^/:?]+):")
_AZURE_DEPLOYMENT_RE = re.compile(r"/openai/deployments/([^/?]+)")
_HF_MODEL_RE = re.compile(r"/hf-inference/models/([^?]+)")
_MULTIPART_MODEL_RE = re.compile(rb'name="model"\r?\n(?:[^\r\n]+\r?\n)*\r?\n([^\r\n]{1,256})\r?\n')

# A line is decoded only if it holds a non-null usage object or a non-null finish reason. Inside
# a JSON string these names would be escaped (\"usage\"), so text content never matches.
_MARKER_RE = re.compile(
    rb'"(?:usage|usageMetadata|billed_units)"\s*:\s*\{'
    rb'|"(?:finish_reason|finishReason|stop_reason)"\s*:\s*"'
    rb'|"type"\s*:\s*"response\.(?:completed|incomplete|failed)"'
)
_USAGE_OBJECT_RE = re.compile(rb'"usage"\s*:\s*\{')
_GEMINI_USAGE_RE = re.compile(rb'"usageMetadata"\s*:\s*\{')
_GEMINI_MODEL_VERSION_RE = re.compile(rb'"modelVersion"\s*:\s*"([^"\\]{1,200})"')
_GEMINI_FINISH_RE = re.compile(rb'"finishReason"\s*:\s*"([^"\\]{1,64})"')
_BRACE_TOKEN_RE = re.compile(rb'[{}]|"(?:[^"\\]|\\.)*"')

# A single line (or Gemini usage object) larger than this is dropped rather than buffered: no
# usage-bearing event is anywhere near it, and the meter must not hold a runaway answer in memory.
_MAX_PENDING = 16 << 20
# Bytes kept between chunks in Gemini array mode so a marker split across chunks is still seen.
_ARRAY_OVERLAP = 256


@dataclass(slots=True)
class Usage:
    """Normalised usage of one call; None means "not reported", never "zero"."""

    input_tokens: int | None = None
    """Billed input excluding cache reads and writes."""
    output_tokens: int | None = None
    """Billed output, including reasoning tokens billed as output."""
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    """Informational: already counted inside `output_tokens`."""
    provider_cost_usd: float | None = None
    """Cost the provider itself reports (xAI, OpenRouter, Perplexity)."""
    model: str | None = None
    """Model the provider reports (response `model`, Gemini `modelVersion`)."""
    finish_reason: str | None = None

    def is_empty(self) -> bool:
        """True when no token count and no provider cost was seen (a model alone is not usage)."""
        return (
            self.input_tokens is None
            and self.output_tokens is None
            and self.cache_read_tokens is None
            and self.cache_write_tokens is None
            and self.reasoning_tokens is None
            and self.provider_cost_usd is None
        )

    def as_dict(self) -> dict[str, object]:
        """All fields by name, for metadata and the audit log."""
        return {name: getattr(self, name) for name in _USAGE_FIELDS}


_USAGE_FIELDS = tuple(f.name for f in fields(Usage))  # dataclasses.fields() is slow per chunk


def _overlay(target: Usage, newer: Usage) -> None:
    """Copy every field `newer` reports onto `target`: providers repeat cumulative totals."""
    for name in _USAGE_FIELDS:
        value = getattr(newer, name)
        if value is not None:
            setattr(target, name, value)


# --------------------------------------------------------------------------------------------
# Requests


def api_flavor(provider: str, method: str, path: str) -> str:
    """Which wire format a request speaks, from its provider, method and path.

    Returns "openai-chat", "openai-responses", "openai-embeddings", "openai-completions",
    "anthropic-messages", "gemini", "cohere-v1", "cohere-v2" or "other". Paths are matched by
    suffix, so the OpenAI-compatible prefixes (`/v1`, none on Perplexity, Groq `/openai/v1`,
    Fireworks `/inference/v1`, OpenRouter `/api/v1`, HF router `/{provider}/v1`, Azure
    `/openai/deployments/{d}` and `/openai/v1`, Gemini `/v1beta/openai`) all work; `/v1/messages`
    is Anthropic's format wherever it appears (Anthropic, DeepSeek `/anthropic`, xAI, Fireworks).
    """
    if method.upper() != "POST" or provider == "vectara":
        return "other"
    path = path.split("?", 1)[0].rstrip("/")
    last = path.rsplit("/", 1)[-1]
    if ":" in last:  # Gemini / Vertex RPC verbs: /models/{m}:generateContent
        return "gemini" if last.rsplit(":", 1)[1] in _GEMINI_VERBS else "other"
    if path.endswith("/chat/completions"):
        return "openai-chat"
    if path.endswith("/v1/messages"):
        return "anthropic-messages"
    if provider == "cohere":
        if path.startswith("/v1/"):
            return "cohere-v1"
        if path.startswith("/v2/"):
            return "cohere-v2"
    if path.endswith("/responses"):
        return "openai-responses"
    if path.endswith("/embeddings"):
        return "openai-embeddings"
    if path.endswith("/completions"):
        return "openai-completions"
    return "other"


def _parse_object(body: bytes) -> JSONObject | None:
    """The body as a JSON object, or None for anything else (empty, form data, binary, arrays)."""
    head = body[:64].lstrip()
    if not head.startswith(b"{"):
        return None
    try:
        value = json.loads(body)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return None
    return value if isinstance(value, dict) else None


# The gateway asks about one request body three times in a row (model, stream, include_usage).
# Remembering the last parse by identity of the bytes object saves re-decoding large bodies; the
# strong reference held here keeps the identity valid.
_last_request: tuple[bytes, JSONObject | None] | None = None


def _request_object(body: bytes) -> JSONObject | None:
    """`_parse_object` with a one-entry memo keyed by the identity of `body`."""
    global _last_request
    memo = _last_request
    if memo is not None and memo[0] is body:
        return memo[1]
    parsed = _parse_object(body)
    _last_request = (body, parsed)
    return parsed


def _hf_path_model(path: str) -> str | None:
    """`org/name` (or `name`) from an HF `/hf-inference/models/...` task URL."""
    m = _HF_MODEL_RE.search(path)
    if m is None:
        return None
    parts = m.group(1).split("/")
    if len(parts) >= 2 and parts[1] not in ("v1", "pipeline"):
        return unquote(f"{parts[0]}/{parts[1]}")
    return unquote(parts[0]) or None


def request_model(flavor: str, path: str, body: bytes) -> str | None:
    """Model named by the request.

    Gemini and Azure classic name it in the URL (`models/{m}:...`, `deployments/{d}`: a
    deployment name, so price on the response model); everyone else in the JSON body `model`
    (multipart uploads in a form field); HF task URLs carry it after `/hf-inference/models/`.
    """
    if flavor == "gemini":
        m = _GEMINI_MODEL_RE.search(path)
        return unquote(m.group(1)) if m else None
    m = _AZURE_DEPLOYMENT_RE.search(path)
    if m:
        return unquote(m.group(1))
    obj = _request_object(body)
    if obj is not None:
        model = obj.get("model")
        if isinstance(model, str) and model:
            return model
    elif b'name="model"' in body[:65536]:
        found = _MULTIPART_MODEL_RE.search(body, 0, 65536)
        if found:
            return found.group(1).decode("utf-8", "replace").strip() or None
    return _hf_path_model(path)


def is_stream_request(flavor: str, path: str, body: bytes) -> bool:
    """Whether the answer will stream: body `"stream": true`, or Gemini `:streamGenerateContent`."""
    if flavor == "gemini":
        return ":streamGenerateContent" in path
    if b'"stream"' not in body:  # cheap refusal before any JSON decoding
        return False
    obj = _request_object(body)
    return obj is not None and obj.get("stream") is True


def ensure_stream_usage(flavor: str, provider: str, body: bytes) -> bytes | None:
    """Ask an OpenAI-style chat stream for its usage if the client did not.

    For `openai-chat` streams of `INCLUDE_USAGE_PROVIDERS` without
    `stream_options.include_usage: true`, return a new body that has it, every other field kept.
    None when nothing must change (not a stream, already asked, other API or provider). The
    caller then drops the extra usage-only chunk (`StreamMeter(drop_usage_only_chunk=True)`).
    """
    if flavor != "openai-chat" or provider not in INCLUDE_USAGE_PROVIDERS:
        return None
    if b'"stream"' not in body:
        return None
    obj = _request_object(body)
    if obj is None or obj.get("stream") is not True:
        return None
    if "stream_options" not in obj:
        # Splice the field in after the opening brace: the client's bytes stay exactly as they
        # were (number formats, key order, escapes), and the object is non-empty (it has
        # "stream"), so the trailing comma is valid.
        brace = body.index(b"{")
        return body[: brace + 1] + b'"stream_options":{"include_usage":true},' + body[brace + 1 :]
    options = obj["stream_options"]
    if options is None:
        options = {}
    if not isinstance(options, dict):
        return None  # malformed: let the provider reject it as the client wrote it
    if options.get("include_usage") is True:
        return None
    rewritten = dict(obj)  # the memo's dict is shared: never mutate it
    rewritten["stream_options"] = {**options, "include_usage": True}
    return json.dumps(rewritten, ensure_ascii=False, separators=(",", ":")).encode()


# --------------------------------------------------------------------------------------------
# Field readers


def _int(value: object) -> int | None:
    """A token count, or None for absent / null / non-numeric (JSON booleans are not counts)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _first_int(*values: object) -> int | None:
    """The first value that is a token count."""
    for value in values:
        found = _int(value)
        if found is not None:
            return found
    return None


def _num(value: object) -> float | None:
    """A number (cost), or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _dict(value: object) -> JSONObject:
    """The value if it is a JSON object, else an empty one (so lookups can chain)."""
    return value if isinstance(value, dict) else {}


def _str(value: object) -> str | None:
    """The value if it is a non-empty string."""
    return value if isinstance(value, str) and value else None


def _provider_cost(usage: JSONObject) -> float | None:
    """USD cost inside a usage object: xAI ticks, OpenRouter `cost`, Perplexity `cost{}`."""
    ticks = _int(usage.get("cost_in_usd_ticks"))
    if ticks is not None:
        return ticks / 1e10  # 1 USD = 10^10 ticks
    cost = usage.get("cost")
    if isinstance(cost, dict):
        return _num(cost.get("total_cost"))
    return _num(cost)


def _without_cache(total: int | None, *cached: int | None) -> int | None:
    """An input total minus its cached parts, never below zero."""
    if total is None:
        return None
    return max(0, total - sum(c for c in cached if c is not None))


def _chat_usage(provider: str, u: JSONObject) -> Usage:
    """OpenAI chat/completions/embeddings `usage` and every provider that copies it."""
    prompt = _int(u.get("prompt_tokens"))
    prompt_details = _dict(u.get("prompt_tokens_details"))
    completion_details = _dict(u.get("completion_tokens_details"))
    cached = _first_int(
        prompt_details.get("cached_tokens"),
        u.get("prompt_cache_hit_tokens"),  # DeepSeek
        u.get("cached_tokens"),  # Groq (older)
        u.get("cached_prompt_text_tokens"),  # xAI
    )
    cache_write = _int(prompt_details.get("cache_write_tokens"))  # OpenAI, OpenRouter
    miss = _int(u.get("prompt_cache_miss_tokens"))  # DeepSeek: exactly the uncached input
    reasoning = _first_int(completion_details.get("reasoning_tokens"), u.get("reasoning_tokens"))
    output = _int(u.get("completion_tokens"))
    if provider in _REASONING_BESIDE_OUTPUT:
        extra = (reasoning or 0) + (_int(u.get("citation_tokens")) or 0)
        total = _int(u.get("total_tokens"))
        # These providers have reported reasoning beside completion_tokens (total = prompt +
        # completion + reasoning); when the total says it is already inside, don't add it twice.
        already_inside = total is not None and total == (prompt or 0) + (output or 0)
        if extra and not already_inside:
            output = (output or 0) + extra
    return Usage(
        input_tokens=miss if miss is not None else _without_cache(prompt, cached, cache_write),
        output_tokens=output,
        cache_read_tokens=cached,
        cache_write_tokens=cache_write,
        reasoning_tokens=reasoning,
        provider_cost_usd=_provider_cost(u),
    )


def _responses_usage(u: JSONObject) -> Usage:
    """OpenAI Responses API `usage` (input includes cached; output includes reasoning)."""
    in_details = _dict(u.get("input_tokens_details"))
    out_details = _dict(u.get("output_tokens_details"))
    cached = _first_int(
        in_details.get("cached_tokens"),
        in_details.get("cache_read_input_tokens"),  # Perplexity
    )
    cache_write = _int(in_details.get("cache_write_tokens"))
    return Usage(
        input_tokens=_without_cache(_int(u.get("input_tokens")), cached, cache_write),
        output_tokens=_int(u.get("output_tokens")),
        cache_read_tokens=cached,
        cache_write_tokens=cache_write,
        reasoning_tokens=_int(out_details.get("reasoning_tokens")),
        provider_cost_usd=_provider_cost(u),
    )


def _anthropic_usage(u: JSONObject) -> Usage:
    """Anthropic `usage`: `input_tokens` already excludes cache reads and writes."""
    return Usage(
        input_tokens=_int(u.get("input_tokens")),
        output_tokens=_int(u.get("output_tokens")),
        cache_read_tokens=_int(u.get("cache_read_input_tokens")),
        cache_write_tokens=_int(u.get("cache_creation_input_tokens")),
        provider_cost_usd=_provider_cost(u),
    )


def _any_usage(provider: str, u: JSONObject) -> Usage:
    """A usage object of unknown family, told apart by its field names."""
    if "prompt_tokens" in u or "completion_tokens" in u:
        return _chat_usage(provider, u)
    if "cache_read_input_tokens" in u or "cache_creation_input_tokens" in u:
        return _anthropic_usage(u)
    return _responses_usage(u)


def _cohere_usage(container: JSONObject) -> Usage:
    """Cohere `usage`/`meta`: bill on `billed_units`; `cached_tokens` is reported beside it.

    The cached count is moved out of input so that `input_tokens` keeps its meaning; genai-prices
    adds it back, and with no Cohere cache price the cost equals billing on `billed_units`.
    """
    billed = _dict(container.get("billed_units"))
    cached = _int(container.get("cached_tokens"))
    return Usage(
        input_tokens=_without_cache(_int(billed.get("input_tokens")), cached),
        output_tokens=_int(billed.get("output_tokens")),
        cache_read_tokens=cached,
    )


# --------------------------------------------------------------------------------------------
# Answer objects (whole bodies and single stream events)


def _from_openai(provider: str, obj: JSONObject) -> Usage:
    """Chat/completions/embeddings body or chunk; Groq streams put usage under `x_groq`."""
    raw = obj.get("usage")
    if not isinstance(raw, dict):
        raw = _dict(obj.get("x_groq")).get("usage")
    usage = _any_usage(provider, raw) if isinstance(raw, dict) else Usage()
    usage.model = _str(obj.get("model"))
    choices = obj.get("choices")
    if isinstance(choices, list) and choices:
        usage.finish_reason = _str(_dict(choices[0]).get("finish_reason"))
    return usage


_RESPONSE_DONE = frozenset({"completed", "incomplete", "failed", "cancelled"})


def _from_responses(provider: str, obj: JSONObject) -> Usage:
    """Responses API body, or a stream event wrapping it (`response.completed` and kin)."""
    response = obj.get("response")
    if not isinstance(response, dict):
        if "choices" in obj:  # a chat-shaped answer on a /responses path
            return _from_openai(provider, obj)
        response = obj
    raw = response.get("usage")
    usage = _any_usage(provider, raw) if isinstance(raw, dict) else Usage()
    usage.model = _str(response.get("model"))
    status = _str(response.get("status"))
    if status in _RESPONSE_DONE:
        reason = _str(_dict(response.get("incomplete_details")).get("reason"))
        usage.finish_reason = reason if status == "incomplete" and reason else status
    return usage


def _from_anthropic(obj: JSONObject) -> Usage:
    """Messages body, `message_start` (usage inside `message`) or `message_delta` event."""
    message = obj.get("message")
    source = message if isinstance(message, dict) else obj
    usage = _anthropic_usage(_dict(source.get("usage")))
    if obj.get("type") == "message_delta" and not usage.input_tokens:
        # Deltas are cumulative; a delta without (or with a zero) input count must not wipe
        # the one message_start gave.
        usage.input_tokens = None
    usage.model = _str(source.get("model"))
    usage.finish_reason = _str(_dict(obj.get("delta")).get("stop_reason")) or _str(
        source.get("stop_reason")
    )
    return usage


def _gemini_usage(meta: JSONObject) -> Usage:
    """Gemini `usageMetadata`: prompt includes cached content; thoughts are billed as output."""
    prompt = _int(meta.get("promptTokenCount"))
    cached = _int(meta.get("cachedContentTokenCount"))
    tool_prompt = _int(meta.get("toolUsePromptTokenCount"))
    candidates = _int(meta.get("candidatesTokenCount"))
    thoughts = _int(meta.get("thoughtsTokenCount"))
    input_tokens = None
    if prompt is not None or tool_prompt is not None:
        input_tokens = (_without_cache(prompt, cached) or 0) + (tool_prompt or 0)
    output_tokens = None
    if candidates is not None or thoughts is not None:
        output_tokens = (candidates or 0) + (thoughts or 0)
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cached,
        reasoning_tokens=thoughts,
    )


def _from_gemini(obj: JSONObject) -> Usage:
    """generateContent body or one streamed chunk (each carries the running totals)."""
    usage = _gemini_usage(_dict(obj.get("usageMetadata")))
    usage.model = _str(obj.get("modelVersion"))
    candidates = obj.get("candidates")
    if isinstance(candidates, list) and candidates:
        usage.finish_reason = _str(_dict(candidates[0]).get("finishReason"))
    return usage


def _from_cohere_v1(obj: JSONObject) -> Usage:
    """v1 body (`meta`), or the NDJSON `stream-end` line (`response.meta`)."""
    source = obj
    if obj.get("event_type") == "stream-end" and isinstance(obj.get("response"), dict):
        source = obj["response"]
    usage = _cohere_usage(_dict(source.get("meta")))
    usage.finish_reason = _str(obj.get("finish_reason")) or _str(source.get("finish_reason"))
    return usage


def _from_cohere_v2(obj: JSONObject) -> Usage:
    """v2 body (`usage`; embed/rerank: `meta`), or the SSE `message-end` event (`delta.usage`)."""
    if obj.get("type") == "message-end":
        delta = _dict(obj.get("delta"))
        usage = _cohere_usage(_dict(delta.get("usage")))
        usage.finish_reason = _str(delta.get("finish_reason"))
        return usage
    usage = _cohere_usage(_dict(obj.get("usage")) or _dict(obj.get("meta")))
    usage.finish_reason = _str(obj.get("finish_reason"))
    return usage


def _extract(provider: str, flavor: str, obj: JSONObject) -> Usage:
    """What one answer object (whole body or one stream event) reports, by API flavor."""
    if flavor == "anthropic-messages":
        return _from_anthropic(obj)
    if flavor == "gemini":
        return _from_gemini(obj)
    if flavor == "cohere-v1":
        return _from_cohere_v1(obj)
    if flavor == "cohere-v2":
        return _from_cohere_v2(obj)
    if flavor == "openai-responses":
        return _from_responses(provider, obj)
    return _from_openai(provider, obj)


def usage_from_body(provider: str, flavor: str, body: bytes) -> Usage | None:
    """Usage from a complete (non-streamed) JSON answer; None when it says nothing about usage."""
    obj = _parse_object(body)
    if obj is None:
        return None
    usage = _extract(provider, flavor, obj)
    if usage.is_empty() and usage.model is None:
        return None
    return usage


# --------------------------------------------------------------------------------------------
# Streams


def _boundary_end(buf: bytes | bytearray, start: int, end: int | None = None) -> int:
    """End of the first SSE event boundary (blank line) in buf[start:end], or -1."""
    stop = len(buf) if end is None else end
    a = buf.find(b"\n\n", start, stop)
    b = buf.find(b"\n\r\n", start, stop)
    ends = [i + n for i, n in ((a, 2), (b, 3)) if i >= 0]
    return min(ends) if ends else -1


def _last_boundary_end(buf: bytes | bytearray, start: int, end: int | None = None) -> int:
    """End of the last SSE event boundary in buf[start:end], or -1 (\\n and \\r\\n lines)."""
    stop = len(buf) if end is None else end
    a = buf.rfind(b"\n\n", start, stop)
    b = buf.rfind(b"\n\r\n", start, stop)
    return max(a + 2 if a >= 0 else -1, b + 3 if b >= 0 else -1)


def _is_usage_only_event(event: bytes) -> bool:
    """Whether an SSE event is the `choices: []` chunk that carries only usage."""
    data = [line[5:] for line in event.splitlines() if line.startswith(b"data:")]
    try:
        obj = json.loads(b"\n".join(data))
    except ValueError:
        return False
    return isinstance(obj, dict) and obj.get("choices") == [] and isinstance(obj.get("usage"), dict)


def _object_end(buf: bytes | bytearray, start: int) -> int:
    """Index of the `}` closing the JSON object opening at buf[start], or -1 if not complete yet."""
    depth = 0
    for token in _BRACE_TOKEN_RE.finditer(buf, start):
        t = token.group()
        if t == b"{":
            depth += 1
        elif t == b"}":
            depth -= 1
            if depth == 0:
                return token.start()
    return -1


class StreamMeter:
    """Meter one streamed answer chunk by chunk, and optionally drop the injected usage chunk.

    Understands SSE (events may span chunks; lines end in \\n or \\r\\n; each `data:` line is one
    JSON document, as every supported provider sends), Cohere v1 NDJSON, and Gemini's streamed
    JSON array (without `alt=sse`). Cumulative usage is taken last-value-wins: Anthropic
    `message_delta` over `message_start`, every Gemini chunk, Groq `x_groq.usage`, the OpenAI
    final chunk, Responses `response.completed|incomplete|failed`, Cohere v2 `message-end`,
    Cohere v1 `stream-end`.
    """

    __slots__ = (
        "_array",
        "_drop",
        "_flavor",
        "_held",
        "_mode",
        "_provider",
        "_seen",
        "_tail",
        "_usage",
    )

    def __init__(self, provider: str, flavor: str, *, drop_usage_only_chunk: bool = False) -> None:
        self._provider = provider
        self._flavor = flavor
        # Dropping needs SSE event boundaries, which only the OpenAI-style chat stream has here.
        self._drop = drop_usage_only_chunk and flavor == "openai-chat"
        self._usage = Usage()
        self._seen = False
        self._mode: str | None = None  # "lines" or "array", fixed by the first bytes
        self._tail = bytearray()  # incomplete last line (lines mode)
        self._array = bytearray()  # unparsed rest (array mode)
        self._held = bytearray()  # incomplete trailing SSE event not yet forwarded (drop mode)

    @property
    def usage(self) -> Usage:
        """A copy of the usage seen so far (partial if the stream was cut short)."""
        return replace(self._usage)

    @property
    def first_chunk_seen(self) -> bool:
        """Whether any answer bytes have arrived."""
        return self._seen

    def feed(self, chunk: bytes) -> bytes:
        """Record what the chunk says; return the bytes to forward (the chunk itself if unchanged).

        Returns b"" only when everything in the chunk was held back or dropped.
        """
        if not chunk:
            return chunk
        self._seen = True
        try:
            self._meter(chunk)
        except Exception:  # a metering bug must never break the answer the user is reading
            log.exception("usage metering failed on a %s/%s stream", self._provider, self._flavor)
        if self._drop:
            return self._filter(chunk)
        return chunk

    def finish(self) -> bytes:
        """End of stream: read an unterminated last line, and return any held-back bytes."""
        if self._tail:
            line = bytes(self._tail)
            self._tail.clear()
            try:
                self._scan(line, 0, len(line))
            except Exception:
                log.exception("usage metering failed at the end of a %s stream", self._provider)
        self._array.clear()
        out = bytes(self._held)
        self._held.clear()
        return out

    # -- metering ---------------------------------------------------------------------------

    def _meter(self, chunk: bytes) -> None:
        """Feed one chunk to the parser for this stream's framing."""
        if self._mode is None:
            head = chunk.lstrip()
            if not head:
                return
            # Gemini without alt=sse streams one JSON array; everything else is line-framed.
            self._mode = "array" if self._flavor == "gemini" and head.startswith(b"[") else "lines"
        if self._mode == "array":
            self._meter_array(chunk)
        else:
            self._meter_lines(chunk)

    def _meter_lines(self, chunk: bytes) -> None:
        """Scan the complete lines this chunk finishes; keep the incomplete last line."""
        last_nl = chunk.rfind(b"\n")
        if last_nl < 0:
            if len(self._tail) + len(chunk) > _MAX_PENDING:
                self._tail.clear()
            else:
                self._tail += chunk
            return
        start = 0
        if self._tail:
            first_nl = chunk.find(b"\n")
            line = bytes(self._tail) + chunk[: first_nl + 1]
            self._tail.clear()
            self._scan(line, 0, len(line))
            start = first_nl + 1
        self._scan(chunk, start, last_nl + 1)
        self._tail += chunk[last_nl + 1 :]

    def _scan(self, buf: bytes, start: int, end: int) -> None:
        """Decode the lines of buf[start:end] that carry a usage or finish marker."""
        pos = start
        while pos < end:
            m = _MARKER_RE.search(buf, pos, end)
            if m is None:
                return
            line_start = buf.rfind(b"\n", start, m.start()) + 1 or start
            line_end = buf.find(b"\n", m.end(), end)
            if line_end < 0:
                line_end = end
            self._parse_line(buf[line_start:line_end])
            pos = line_end + 1

    def _parse_line(self, line: bytes) -> None:
        """Decode one SSE `data:` line or NDJSON line and fold what it reports into the usage."""
        line = line.strip()
        if line.startswith(b"data:"):
            line = line[5:].lstrip()
        if not line.startswith(b"{"):
            return
        try:
            obj = json.loads(line)
        except ValueError:
            return
        if isinstance(obj, dict):
            _overlay(self._usage, _extract(self._provider, self._flavor, obj))

    def _meter_array(self, chunk: bytes) -> None:
        """Gemini's JSON-array stream: decode each complete `usageMetadata` object only.

        The array is pretty-printed over many lines, so lines mean nothing; usageMetadata holds
        only numbers and enum strings, so its extent is found by matching braces.
        """
        buf = self._array
        buf += chunk
        pos = 0
        while True:
            m = _GEMINI_USAGE_RE.search(buf, pos)
            if m is None:
                break
            self._read_array_fields(buf, pos, m.start())
            close = _object_end(buf, m.end() - 1)
            if close < 0:  # usage object not complete yet: keep it from its name on
                del buf[: m.start()]
                if len(buf) > _MAX_PENDING:
                    buf.clear()
                return
            try:
                meta = json.loads(buf[m.end() - 1 : close + 1])
            except ValueError:
                meta = None
            if isinstance(meta, dict):
                _overlay(self._usage, _gemini_usage(meta))
            pos = close + 1
        self._read_array_fields(buf, pos, len(buf))
        # Keep a short overlap so a name split across chunks is still found next time.
        del buf[: max(pos, len(buf) - _ARRAY_OVERLAP)]

    def _read_array_fields(self, buf: bytearray, start: int, end: int) -> None:
        """Model version and finish reason, matched directly in the raw array text."""
        for m in _GEMINI_MODEL_VERSION_RE.finditer(buf, start, end):
            self._usage.model = m.group(1).decode("utf-8", "replace")
        for m in _GEMINI_FINISH_RE.finditer(buf, start, end):
            self._usage.finish_reason = m.group(1).decode("utf-8", "replace")

    # -- dropping the injected usage chunk ------------------------------------------------------

    def _filter(self, chunk: bytes) -> bytes:
        """Forward complete events minus the usage-only one; hold back an incomplete last event."""
        held = self._held
        if not held:
            ends_on_boundary = chunk.endswith((b"\n\n", b"\n\r\n"))
            if ends_on_boundary and _USAGE_OBJECT_RE.search(chunk) is None:
                return chunk  # the common case: whole events, none with usage
            before = 0
        else:
            before = len(held)
        held += chunk
        # A boundary may straddle the join (held ends in "\n", chunk starts with "\r\n").
        cut = _last_boundary_end(held, max(0, before - 2))
        if cut < 0:
            if len(held) > _MAX_PENDING:  # not SSE after all: stop holding, forward as is
                self._drop = False
                out = bytes(held)
                held.clear()
                return out
            return b""
        complete = bytes(held[:cut])
        del held[:cut]
        out = self._without_usage_only_event(complete)
        if not self._drop:  # dropped it: nothing more to hold back
            out += bytes(held)
            held.clear()
        if not held and not before and out == chunk:
            return chunk
        return out

    def _without_usage_only_event(self, events: bytes) -> bytes:
        """`events` (whole SSE events) with the usage-only event cut out, if it is there."""
        pos = 0
        while True:
            m = _USAGE_OBJECT_RE.search(events, pos)
            if m is None:
                return events
            begin = max(0, _last_boundary_end(events, 0, m.start()))
            finish = _boundary_end(events, m.end())
            if finish < 0:
                finish = len(events)
            if _is_usage_only_event(events[begin:finish]):
                self._drop = False  # there is only one such event per stream
                return events[:begin] + events[finish:]
            pos = finish
