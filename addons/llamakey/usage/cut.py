"""Cutting a streamed answer short (README "Budgets"): how much it has said so far, where an
event ends, and the final error event in the stream's own format.

`OutputCount` runs only for streams a budget watches (never on other streams): it finds the
generated text in each complete line of the stream and counts a token per 4 bytes of it, at
least one per piece (what `steps.meter` estimates a stream by when its provider's own count
never came). The provider's running count, where the
stream carries one (Gemini's every chunk, Anthropic's `message_delta`), wins when larger.

`error_event` is what each SDK raises on in the middle of a stream: openai's `APIError` for a
`data:` object with an `error` (chat, completions, Responses: it also carries the Responses
API's own ``type: error`` fields), anthropic's `APIStatusError` for an ``event: error``,
google-genai's `ClientError` for a `data:` object that starts with `error` (`alt=sse`); each
body is the provider's error shape (`refusals.error_body`) for a 429.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum

from llamakey.providers import ErrorShape
from llamakey.refusals import Refusal, error_body
from llamakey.usage.flavors import ApiFlavor

__all__ = ["Framing", "OutputCount", "error_event", "framing_of"]

# A line longer than this is not counted (no content event is anywhere near it).
_MAX_LINE = 1 << 20
# A JSON string under a key that holds text a model generated, in every supported stream
# format: OpenAI chat `delta.content`, Anthropic, Gemini parts and Cohere `text`, Responses
# `delta`, Anthropic `partial_json`, tool-call `arguments`, reasoning and refusals. Found with
# one C-level scan per chunk, no JSON decoding (inside a JSON string a quote is escaped, so
# text that merely mentions a key never matches).
_TEXT_RE = re.compile(
    rb'"(?:content|text|delta|partial_json|arguments|thinking|reasoning_content|reasoning'
    rb'|refusal)"\s*:\s*"((?:[^"\\]|\\.)*)"'
)
# The Responses API: only its deltas (`*.done` and `response.completed` repeat the whole text).
_DELTA_RE = re.compile(rb'"delta"\s*:\s*"((?:[^"\\]|\\.)*)"')


class Framing(StrEnum):
    """How a stream's events are delimited, so a cut falls between two of them."""

    SSE = "sse"  # server-sent events: a blank line ends each
    LINES = "lines"  # NDJSON: a newline ends each
    NONE = "none"  # one JSON document (Gemini without alt=sse): no boundary a cut can use


def framing_of(content_type: str) -> Framing:
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "text/event-stream":
        return Framing.SSE
    if kind in ("application/x-ndjson", "application/jsonl", "application/stream+json"):
        return Framing.LINES
    return Framing.NONE


ENDINGS: dict[Framing, tuple[bytes, ...]] = {
    Framing.SSE: (b"\n\n", b"\n\r\n"),
    Framing.LINES: (b"\n",),
    Framing.NONE: (),
}
"""What forwarded bytes end with when they end between two events."""


class OutputCount:
    """A running estimate of the output tokens a stream has carried so far: a token per 4
    bytes of generated text as it was sent, at least one per piece of text."""

    __slots__ = ("_pattern", "_skip_ends", "_tail", "tokens")

    def __init__(self, flavor: ApiFlavor) -> None:
        self._pattern = _DELTA_RE if flavor == ApiFlavor.OPENAI_RESPONSES else _TEXT_RE
        # Cohere v1's `stream-end` repeats the whole answer.
        self._skip_ends = flavor == ApiFlavor.COHERE_V1
        self._tail = bytearray()
        self.tokens = 0

    def feed(self, chunk: bytes) -> None:
        """Count the text of the lines `chunk` completes; keep its incomplete last line."""
        last = chunk.rfind(b"\n")
        if last < 0:
            if len(self._tail) + len(chunk) <= _MAX_LINE:
                self._tail += chunk
            else:
                self._tail.clear()
            return
        lines = bytes(self._tail) + chunk[: last + 1] if self._tail else chunk[: last + 1]
        self._tail.clear()
        self._tail += chunk[last + 1 :]
        if self._skip_ends and b'"stream-end"' in lines:
            lines = b"\n".join(x for x in lines.split(b"\n") if b'"stream-end"' not in x)
        for found in self._pattern.finditer(lines):
            size = found.end(1) - found.start(1)
            if size:
                self.tokens += (size + 3) // 4


def error_event(flavor: ApiFlavor, shape: ErrorShape, framing: Framing, message: str) -> bytes:
    """The final event of a stream cut off by a budget, in its format (b"" for none)."""
    body: dict[str, object] = error_body(shape, 429, message, Refusal.BUDGET_EXCEEDED.value)
    if framing is Framing.NONE:
        return b""
    if framing is Framing.LINES:
        return json.dumps(body).encode() + b"\n"
    event = b""
    if flavor == ApiFlavor.ANTHROPIC_MESSAGES:
        event = b"event: error\n"
    elif flavor == ApiFlavor.OPENAI_RESPONSES:
        # The Responses API's own error event, with the `error` object the SDK raises on.
        error = body.get("error")
        body = {"type": "error", "code": Refusal.BUDGET_EXCEEDED.value, "message": message}
        body["param"] = None
        body["error"] = error if error is not None else {"message": message}
        event = b"event: error\n"
    return event + b"data: " + json.dumps(body).encode() + b"\n\n"
