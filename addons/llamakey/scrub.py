"""Masking secrets: real provider keys and anything shaped like a master key or a JWT.

One `Scrubber` serves the log records, mitmweb's output, kept bodies and headers, and the audit
log's bodies, so a key that reaches any of them comes out the same way. A `StreamScrubber`
does the same for a body that passes through in chunks, where a key may be split across two
of them: it holds back only a chunk's tail that could be the start of a secret, so a streamed
answer is not delayed (an event stream's chunks end in a newline, which starts no secret).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from llamakey.credentials import JWT_PATTERN, jwt_marker, marker, normalise

# Anything that looks like a master key, for scrubbing text we did not write ourselves.
MASTER_KEY_PATTERN = r"(?:hf_)?lmk_[A-Za-z0-9_-]{16,}"
_KEY_CHARS = rb"[A-Za-z0-9_-]"
# The tail of a buffer that may be the beginning of a master key continued in the next chunk:
# "h", "hf", "hf_", "hf_l" ... "lmk_" and any run of key characters after it.
_MASTER_TAIL = re.compile(
    rb"(?:h(?:f(?:_(?:l(?:m(?:k(?:_" + _KEY_CHARS + rb"*)?)?)?)?)?)?"
    rb"|l(?:m(?:k(?:_" + _KEY_CHARS + rb"*)?)?)?)\Z"
)
_MAX_HOLD = 256  # never hold back more than this: longer runs are no key of ours


class Scrubber:
    """Replaces real provider keys and anything shaped like a master key or a JWT."""

    def __init__(self, real_keys: Iterable[str]) -> None:
        keys = sorted({k for k in real_keys if len(k) >= 8}, key=len, reverse=True)
        alternatives = [re.escape(k) for k in keys] + [MASTER_KEY_PATTERN, JWT_PATTERN]
        self._text = re.compile("|".join(alternatives))
        self._bytes = re.compile("|".join(alternatives).encode())
        self._real = frozenset(keys)
        self._real_bytes = (
            re.compile("|".join(re.escape(k) for k in keys).encode()) if keys else None
        )
        # Master keys and JWTs in a streamed body. Unlike a master key's, a JWT's beginning is
        # not held back at a chunk's end: a JWT never goes upstream, so no provider echoes one.
        self._master_bytes = re.compile(f"{MASTER_KEY_PATTERN}|{JWT_PATTERN}".encode())
        encoded = [k.encode() for k in keys]
        # Every proper beginning of a real key: a chunk ending in one may continue the key.
        self.real_prefixes = frozenset(k[:n] for k in encoded for n in range(1, len(k)))
        self.longest_prefix = max((len(k) - 1 for k in encoded), default=0)
        self.real_key_bytes = frozenset(b for k in encoded for b in k)

    def _replacement(self, found: str) -> str:
        if found in self._real:
            return "[provider key redacted]"
        if found.startswith("eyJ"):
            return jwt_marker(None)
        return marker(normalise(found), None)

    def text(self, value: str) -> str:
        """`value` with every secret replaced by a readable marker."""
        return self._text.sub(lambda m: self._replacement(m.group(0)), value)

    def same_length(self, value: bytes) -> bytes:
        """`value` with every secret masked by as many ``*``: safe inside length-prefixed data."""
        return self._bytes.sub(lambda m: b"*" * len(m.group(0)), value)

    def has_secret(self, value: bytes) -> bool:
        """True when `value` holds a secret (cheap check before rewriting a body)."""
        return self._bytes.search(value) is not None

    def mask_real(self, value: bytes) -> bytes:
        """`value` with every complete real key masked (master keys left as they are)."""
        if self._real_bytes is None:
            return value
        return self._real_bytes.sub(lambda m: b"*" * len(m.group(0)), value)

    def mask_master(self, value: bytes) -> bytes:
        """`value` with everything shaped like a master key or a JWT masked."""
        return self._master_bytes.sub(lambda m: b"*" * len(m.group(0)), value)

    def stream(self) -> StreamScrubber:
        """A scrubber for one body that passes through in chunks."""
        return StreamScrubber(self)


class StreamScrubber:
    """Masks secrets in a chunked body, keys split across chunks included."""

    __slots__ = ("_carry", "_scrubber")

    def __init__(self, scrubber: Scrubber) -> None:
        self._scrubber = scrubber
        self._carry = b""

    def feed(self, chunk: bytes) -> bytes:
        """What of `chunk` (after what was held back before) can be sent now, masked."""
        buf = self._carry + chunk if self._carry else chunk
        if not buf:
            return b""
        scrubber = self._scrubber
        # Complete real keys first, so that no tail held back can start inside one.
        if scrubber.has_secret(buf):
            buf = scrubber.mask_real(buf)
        hold = self._hold_from(buf)
        ready, self._carry = buf[:hold], buf[hold:]
        return scrubber.mask_master(ready) if scrubber.has_secret(ready) else ready

    def finish(self) -> bytes:
        """The end of the body: whatever was held back, masked."""
        rest, self._carry = self._carry, b""
        return self._scrubber.same_length(rest) if rest else b""

    def _hold_from(self, buf: bytes) -> int:
        """Where the tail that may be a secret's beginning starts (len(buf): hold nothing)."""
        end = len(buf)
        start = end
        last = buf[-1]
        scrubber = self._scrubber
        # Master keys: a tail of key characters that starts like one, complete or not (a key
        # cut after its 16th character would already match, and its rest would then leak).
        if last in _KEY_CHAR_SET and (found := _MASTER_TAIL.search(buf, max(0, end - _MAX_HOLD))):
            start = found.start()
        # Real keys: the longest tail that is a proper beginning of one of them.
        if last in scrubber.real_key_bytes:
            for length in range(min(scrubber.longest_prefix, end), end - start, -1):
                if buf[end - length :] in scrubber.real_prefixes:
                    start = end - length
                    break
        return start


_KEY_CHAR_SET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
