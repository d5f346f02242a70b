"""Cutting a streamed answer short (README "Budgets"): how much it has said so far, where an
event ends, and the final error event in the stream's own format.

`OutputCount` runs only for streams a budget watches (never on other streams): it decodes each
complete line of the stream and counts the text it carries, a quarter of a token per
character and at least one token per event that carries any (what `steps.meter` estimates a
stream by when its provider's own count never came). The provider's running count, where the
stream carries one (Gemini's every chunk, Anthropic's `message_delta`), wins when larger.

`error_event` is what each SDK raises on in the middle of a stream: openai's `APIError` for a
`data:` object with an `error` (chat, completions, Responses: it also carries the Responses
API's own ``type: error`` fields), anthropic's `APIStatusError` for an ``event: error``,
google-genai's `ClientError` for a `data:` object that starts with `error` (`alt=sse`); each
body is the provider's error shape (`refusals.error_body`) for a 429.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from llamakey.providers import ErrorShape
from llamakey.refusals import Refusal, error_body
from llamakey.usage.flavors import ApiFlavor

__all__ = ["Framing", "OutputCount", "error_event", "framing_of"]

# A line longer than this is not counted (no content event is anywhere near it).
_MAX_LINE = 1 << 20
# Keys whose string values are text a model generated, in every supported stream format.
_TEXT_KEYS = frozenset(
    {
        "content",  # OpenAI chat delta.content
        "text",  # Anthropic, Gemini parts, Cohere
        "delta",  # Responses *.delta (a string there; an object elsewhere, walked)
        "partial_json",  # Anthropic tool input
        "arguments",  # OpenAI tool calls
        "thinking",
        "reasoning_content",
        "reasoning",
        "refusal",
    }
)


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


def _text_length(value: Any) -> int:
    """Characters of generated text in a decoded event (strings under `_TEXT_KEYS`)."""
    total = 0
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str):
                if key in _TEXT_KEYS:
                    total += len(item)
            elif isinstance(item, dict | list):
                total += _text_length(item)
    elif isinstance(value, list):
        for item in value:
            total += _text_length(item)
    return total


class OutputCount:
    """A running estimate of the output tokens a stream has carried so far."""

    __slots__ = ("_flavor", "_tail", "tokens")

    def __init__(self, flavor: ApiFlavor) -> None:
        self._flavor = flavor
        self._tail = bytearray()
        self.tokens = 0

    def feed(self, chunk: bytes) -> None:
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
        for line in lines.split(b"\n"):
            self._count(line)

    def _count(self, line: bytes) -> None:
        line = line.strip()
        if line.startswith(b"data:"):
            line = line[5:].lstrip()
        if not line.startswith(b"{"):
            return
        try:
            event = json.loads(line)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type") or event.get("event_type")
        if self._flavor == ApiFlavor.OPENAI_RESPONSES:
            # Only the deltas: `*.done` and `response.completed` repeat the whole text.
            delta = event.get("delta")
            chars = (
                len(delta)
                if isinstance(kind, str) and kind.endswith(".delta") and isinstance(delta, str)
                else 0
            )
        elif kind == "stream-end":  # Cohere v1 repeats the whole answer at the end
            chars = 0
        else:
            chars = _text_length(event)
        if chars:
            self.tokens += max(1, -(-chars // 4))


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
