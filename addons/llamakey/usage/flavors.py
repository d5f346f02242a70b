"""What a request is: its API flavor, the model it names, whether it streams; and asking an
OpenAI-style chat stream for its usage."""

from __future__ import annotations

import json
import re
from enum import StrEnum
from urllib.parse import unquote

from llamakey.providers import Provider, UsageFamily
from llamakey.usage.readers import parse_object
from llamakey.usage.record import JSONObject

__all__ = ["ApiFlavor", "api_flavor", "ensure_stream_usage", "is_stream_request", "request_model"]


class ApiFlavor(StrEnum):
    """The wire format a request speaks; the value is what flow metadata and the audit keep."""

    OPENAI_CHAT = "openai-chat"
    OPENAI_RESPONSES = "openai-responses"
    OPENAI_EMBEDDINGS = "openai-embeddings"
    OPENAI_COMPLETIONS = "openai-completions"
    ANTHROPIC_MESSAGES = "anthropic-messages"
    GEMINI = "gemini"
    COHERE_V1 = "cohere-v1"
    COHERE_V2 = "cohere-v2"
    OTHER = "other"


_GEMINI_VERBS = frozenset(
    {"generateContent", "streamGenerateContent", "embedContent", "batchEmbedContents"}
)
_GEMINI_MODEL_RE = re.compile(r"/models/([^/:?]+):")
_AZURE_DEPLOYMENT_RE = re.compile(r"/openai/deployments/([^/?]+)")
_HF_MODEL_RE = re.compile(r"/hf-inference/models/([^?]+)")
_MULTIPART_MODEL_RE = re.compile(rb'name="model"\r?\n(?:[^\r\n]+\r?\n)*\r?\n([^\r\n]{1,256})\r?\n')


def api_flavor(provider: Provider, method: str, path: str) -> ApiFlavor:
    """Which wire format a request speaks, from its provider's usage family, method and path.

    Paths are matched by suffix, so the OpenAI-compatible prefixes (`/v1`, none on Perplexity,
    Groq `/openai/v1`, Fireworks `/inference/v1`, OpenRouter `/api/v1`, HF router
    `/{provider}/v1`, Azure `/openai/deployments/{d}` and `/openai/v1`, Gemini `/v1beta/openai`)
    all work; `/v1/messages` is Anthropic's format wherever it appears (Anthropic, DeepSeek
    `/anthropic`, xAI, Fireworks). Only Cohere's native `/v1/` and `/v2/` paths need the family.
    """
    family = provider.usage_family
    if method.upper() != "POST" or family is UsageFamily.NONE:
        return ApiFlavor.OTHER
    path = path.split("?", 1)[0].rstrip("/")
    last = path.rsplit("/", 1)[-1]
    if ":" in last:  # Gemini / Vertex RPC verbs: /models/{m}:generateContent
        return ApiFlavor.GEMINI if last.rsplit(":", 1)[1] in _GEMINI_VERBS else ApiFlavor.OTHER
    if path.endswith("/chat/completions"):
        return ApiFlavor.OPENAI_CHAT
    if path.endswith("/v1/messages"):
        return ApiFlavor.ANTHROPIC_MESSAGES
    if family is UsageFamily.COHERE:
        if path.startswith("/v1/"):
            return ApiFlavor.COHERE_V1
        if path.startswith("/v2/"):
            return ApiFlavor.COHERE_V2
    if path.endswith("/responses"):
        return ApiFlavor.OPENAI_RESPONSES
    if path.endswith("/embeddings"):
        return ApiFlavor.OPENAI_EMBEDDINGS
    if path.endswith("/completions"):
        return ApiFlavor.OPENAI_COMPLETIONS
    return ApiFlavor.OTHER


# The gateway asks about one request body three times in a row (model, stream, include_usage).
# Remembering the last parse by identity of the bytes object saves re-decoding large bodies; the
# strong reference held here keeps the identity valid.
_last_request: tuple[bytes, JSONObject | None] | None = None


def _request_object(body: bytes) -> JSONObject | None:
    """`parse_object` with a one-entry memo keyed by the identity of `body`."""
    global _last_request
    memo = _last_request
    if memo is not None and memo[0] is body:
        return memo[1]
    parsed = parse_object(body)
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


def request_model(flavor: ApiFlavor, path: str, body: bytes) -> str | None:
    """Model named by the request.

    Gemini and Azure classic name it in the URL (`models/{m}:...`, `deployments/{d}`: a
    deployment name, so price on the response model); everyone else in the JSON body `model`
    (multipart uploads in a form field); HF task URLs carry it after `/hf-inference/models/`.
    """
    if flavor == ApiFlavor.GEMINI:
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


def is_stream_request(flavor: ApiFlavor, path: str, body: bytes) -> bool:
    """Whether the answer will stream: body `"stream": true`, or Gemini `:streamGenerateContent`."""
    if flavor == ApiFlavor.GEMINI:
        return ":streamGenerateContent" in path
    if b'"stream"' not in body:  # cheap refusal before any JSON decoding
        return False
    obj = _request_object(body)
    return obj is not None and obj.get("stream") is True


def ensure_stream_usage(flavor: ApiFlavor, provider: Provider, body: bytes) -> bytes | None:
    """Ask an OpenAI-style chat stream for its usage if the client did not.

    For `openai-chat` streams of a provider with `include_stream_usage`, without
    `stream_options.include_usage: true`, return a new body that has it, every other field kept.
    None when nothing must change (not a stream, already asked, other API or provider). The
    caller then drops the extra usage-only chunk (`StreamMeter(drop_usage_only_chunk=True)`).
    """
    if flavor != ApiFlavor.OPENAI_CHAT or not provider.include_stream_usage:
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
