"""The endpoint allow-list: is a request target canonical, and does (method, path) match?

The path is checked as the provider will read it: the exact bytes mitmproxy sends upstream
(`request.data.path`). Nothing is ever decoded, cleaned or rewritten; a target that any server
might read differently from how it is written is refused instead (`canonical_problem`):

- the target must be origin-form (starts with ``/``), with no ``#`` and no byte outside the
  visible ASCII range (space, controls, DEL, non-ASCII);
- the path (before ``?``) must have no empty segment (``//``), no ``.`` or ``..`` segment, no
  backslash, no ``;`` (matrix parameters);
- a percent-escape must be ``%`` + two *uppercase* hex digits, and may not encode an unreserved
  character (``%66`` for ``f``, ``%2E``), a separator or escape (``%2F``, ``%5C``, ``%25``), a
  delimiter (``%3B``, ``%3F``, ``%23``, ``%3A``: Gemini splits model and method at ``:``) or a
  control byte (``%00``-``%1F``).

The query is not part of the path: only its bytes are checked (visible ASCII, no ``#``).

Patterns (`compile_endpoint`): ``METHOD /seg/seg``; the method is upper case or ``*`` (any);
each segment is literal text, where ``*`` matches any run of characters within one segment
(a segment that is only ``*``: at least one character)
(``/v1/files/*``, ``/v1beta/models/*:generateContent``), and a last segment ``**`` matches
zero or more further segments (``/v1/**``). Matching is case-sensitive and exact: a trailing
slash is a different path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PCHAR = r"A-Za-z0-9\-._~!$&'()*+,=:@"
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_FORBIDDEN_ESCAPES = frozenset({0x2F, 0x5C, 0x25, 0x3B, 0x3F, 0x23, 0x3A, *range(0x20)})
_PATH_CHARS = re.compile(rb"[" + _PCHAR.encode() + rb"/%]*")
_ESCAPE = re.compile(rb"%(.?.?)")
_VISIBLE = re.compile(rb"[\x21-\x7e]*")
_METHOD = re.compile(r"[A-Z]+|\*")
_SEGMENT = re.compile(r"[" + _PCHAR + r"%]+")


def canonical_problem(target: bytes) -> str | None:
    """Why `target` (path and query, as sent upstream) is not canonical, or None if it is."""
    if not target.startswith(b"/"):
        return "the request target is not a path starting with '/'"
    if not _VISIBLE.fullmatch(target):
        return "the request target holds a space, control or non-ASCII byte"
    if b"#" in target:
        return "the request target holds '#'"
    path = target.split(b"?", 1)[0]
    if b"\\" in path:
        return "the path holds a backslash"
    if b";" in path:
        return "the path holds ';' (a parameter some servers strip)"
    if not _PATH_CHARS.fullmatch(path):
        return "the path holds a character that must be percent-encoded"
    for segment in path[1:].split(b"/"):
        if segment in (b".", b".."):
            return "the path holds a dot segment"
    if b"//" in path:
        return "the path holds an empty segment ('//')"
    for match in _ESCAPE.finditer(path):
        digits = match.group(1)
        if len(digits) != 2 or not all(c in b"0123456789ABCDEF" for c in digits):
            return "the path holds a percent-escape that is not '%' and two upper-case hex digits"
        value = int(digits, 16)
        if value in _UNRESERVED or value in _FORBIDDEN_ESCAPES:
            return f"the path encodes {chr(value)!r} as %{digits.decode()}"
    return None


@dataclass(frozen=True, slots=True)
class EndpointPattern:
    """One compiled ``METHOD /path`` pattern."""

    text: str
    method: str | None  # None: any method
    regex: re.Pattern[str]

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and bool(self.regex.fullmatch(path))


def check_endpoint(text: str) -> str:
    """`text` if it is a valid endpoint pattern; ValueError saying why otherwise."""
    compile_endpoint(text)
    return text


def compile_endpoint(text: str) -> EndpointPattern:
    """Compile ``METHOD /path`` (module docstring); ValueError naming the problem."""
    method, sep, path = text.partition(" ")
    if not sep or not _METHOD.fullmatch(method):
        raise ValueError("expected 'METHOD /path', e.g. 'POST /v1/chat/completions'")
    if not path.startswith("/"):
        raise ValueError("expected the path to start with '/'")
    if path == "/":
        return EndpointPattern(text, None if method == "*" else method, re.compile("/"))
    segments = path[1:].split("/")
    parts: list[str] = []
    for position, segment in enumerate(segments):
        last = position == len(segments) - 1
        if segment == "**":
            if not last:
                raise ValueError("'**' may only be the last segment")
            parts.append("(?:/[^/]*)*")
            continue
        if segment == "" and last and position > 0:
            parts.append("/")  # an explicit trailing slash
            continue
        if not _SEGMENT.fullmatch(segment) or segment in (".", ".."):
            raise ValueError(f"expected a canonical path segment, got {segment!r}")
        if "**" in segment:
            raise ValueError("'**' must be a whole (last) segment")
        if canonical_problem(("/" + segment.replace("*", "x")).encode()):
            raise ValueError(f"the segment {segment!r} is not canonical (see the README)")
        if segment == "*":
            parts.append("/[^/]+")  # a whole segment, never an empty one
        else:
            parts.append("/" + "[^/]*".join(re.escape(p) for p in segment.split("*")))
    return EndpointPattern(text, None if method == "*" else method, re.compile("".join(parts)))


@dataclass(frozen=True, slots=True)
class EndpointRules:
    """The endpoints one user may call on one provider."""

    patterns: tuple[EndpointPattern, ...]

    def allows(self, method: str, path: str) -> bool:
        return any(p.matches(method, path) for p in self.patterns)
