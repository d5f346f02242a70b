"""`StreamMeter`: meter one streamed answer chunk by chunk, on mitmproxy's event loop.

It runs for every chunk of every streamed answer, so it only decodes JSON for the few lines that
can carry usage or a finish reason (found with one C-level regex scan), and buffers nothing but
the incomplete trailing line.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import replace

from llamakey.providers import Provider
from llamakey.usage.flavors import ApiFlavor
from llamakey.usage.gemini import gemini_usage
from llamakey.usage.parsers import parser_for
from llamakey.usage.record import Usage, overlay

__all__ = ["StreamMeter"]

log = logging.getLogger(__name__)

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
        "_parse",
        "_provider",
        "_tail",
        "_usage",
    )

    def __init__(
        self, provider: Provider, flavor: ApiFlavor, *, drop_usage_only_chunk: bool = False
    ) -> None:
        self._provider = provider
        self._flavor = flavor
        self._parse = parser_for(flavor)
        # Dropping needs SSE event boundaries, which only the OpenAI-style chat stream has here.
        self._drop = drop_usage_only_chunk and flavor == ApiFlavor.OPENAI_CHAT
        self._usage = Usage()
        self._mode: str | None = None  # "lines" or "array", fixed by the first bytes
        self._tail = bytearray()  # incomplete last line (lines mode)
        self._array = bytearray()  # unparsed rest (array mode)
        self._held = bytearray()  # incomplete trailing SSE event not yet forwarded (drop mode)

    @property
    def output_tokens(self) -> int | None:
        """The output count the stream reported so far (no copy: read on every chunk)."""
        return self._usage.output_tokens

    @property
    def input_tokens(self) -> tuple[int, int, int] | None:
        """Input, cache reads and cache writes as the stream reported them so far (Anthropic's
        `message_start`, Gemini's every chunk), None before any."""
        usage = self._usage
        if usage.input_tokens is None:
            return None
        return (usage.input_tokens, usage.cache_read_tokens or 0, usage.cache_write_tokens or 0)

    @property
    def usage(self) -> Usage:
        """A copy of the usage seen so far (partial if the stream was cut short)."""
        return replace(self._usage)

    def feed(self, chunk: bytes) -> bytes:
        """Record what the chunk says; return the bytes to forward (the chunk itself if unchanged).

        Returns b"" only when everything in the chunk was held back or dropped.
        """
        if not chunk:
            return chunk
        try:
            self._meter(chunk)
        except Exception:  # a metering bug must never break the answer the user is reading
            log.exception(
                "usage metering failed on a %s/%s stream", self._provider.name, self._flavor
            )
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
                log.exception(
                    "usage metering failed at the end of a %s stream", self._provider.name
                )
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
            gemini = self._flavor == ApiFlavor.GEMINI
            self._mode = "array" if gemini and head.startswith(b"[") else "lines"
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
            overlay(self._usage, self._parse(self._provider, obj))

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
                overlay(self._usage, gemini_usage(meta))
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
