"""Master keys and the places credentials travel in a request.

A master key is ``lmk_`` followed by 43 URL-safe characters (32 random bytes). Only its
SHA-256 is stored. The Hugging Face SDK routes by the ``hf_`` prefix of its token, so
``hf_lmk_…`` is accepted as the same master key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Iterable
from urllib.parse import parse_qsl

from mitmproxy import http

from llamakey.providers import Carrier

MASTER_PREFIX = "lmk_"
HF_PREFIX = "hf_"
# Anything that looks like a master key, for scrubbing text we did not write ourselves.
MASTER_KEY_PATTERN = r"(?:hf_)?lmk_[A-Za-z0-9_-]{16,}"

_HEADER_CARRIERS = (Carrier.BEARER, Carrier.X_API_KEY, Carrier.API_KEY, Carrier.GOOG_API_KEY)
_CARRIER_BY_HEADER = {c.value.encode(): c for c in _HEADER_CARRIERS}


def new_master_key() -> str:
    """A fresh master key: ``lmk_`` + 32 random bytes, URL-safe base64."""
    return MASTER_PREFIX + secrets.token_urlsafe(32)


def key_sha256(key: str) -> str:
    """The stored form of a master key.

    Header bytes that are not UTF-8 reach us as surrogate escapes; hashing them back to the
    bytes the client sent keeps a malformed key a wrong key, never an exception.
    """
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def normalise(value: str) -> str:
    """The master key inside a presented value: strips the ``hf_`` routing prefix."""
    if value.startswith(HF_PREFIX + MASTER_PREFIX):
        return value[len(HF_PREFIX) :]
    return value


def marker(key: str, user: str | None) -> str:
    """What mitmweb, saved flows and logs show instead of a key: ``lmk_...9f3a (alice)``."""
    tail = key[-4:] if len(key) >= 12 else ""
    return f"{MASTER_PREFIX}...{tail} ({user or 'unknown'})"


def presented(request: http.Request) -> list[tuple[Carrier, str]]:
    """Every credential the request carries, with where it was found (header or ``?key=``)."""
    found: list[tuple[Carrier, str]] = []
    # One pass over the raw header fields: each `headers.get` would scan them all again.
    for raw_name, raw_value in request.headers.fields:
        carrier = _CARRIER_BY_HEADER.get(raw_name.lower())
        if carrier is None:
            continue
        value = raw_value.decode("utf-8", "surrogateescape")
        if carrier is Carrier.BEARER:
            scheme, _, token = value.partition(" ")
            if scheme.lower() != "bearer":
                continue
            value = token
        found.append((carrier, value.strip()))
    found.sort(key=lambda item: _HEADER_CARRIERS.index(item[0]))  # a stable preference
    if "key=" in request.path:
        for name, value in parse_qsl(request.path.partition("?")[2], keep_blank_values=True):
            if name == "key":
                found.append((Carrier.QUERY_KEY, value))
    return found


def set_credential(request: http.Request, carrier: Carrier, value: str) -> None:
    """Put `value` where `carrier` says (replacing what is there)."""
    match carrier:
        case Carrier.BEARER:
            request.headers["authorization"] = f"Bearer {value}"
        case Carrier.QUERY_KEY:
            request.query["key"] = value
        case _:
            request.headers[carrier.value] = value


def clear_credentials(request: http.Request, carriers: Iterable[Carrier]) -> None:
    """Remove credentials from these carriers."""
    for carrier in carriers:
        if carrier is Carrier.QUERY_KEY:
            if "key" in request.query:
                del request.query["key"]
        elif carrier.value in request.headers:
            del request.headers[carrier.value]


def proxy_credentials(header: str | None) -> tuple[str, str] | None:
    """(user, password) from a ``Proxy-Authorization: Basic …`` header, or None."""
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = (
            base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        )
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


class Scrubber:
    """Replaces real provider keys and anything shaped like a master key in text.

    One instance serves the log filter, provider error bodies and mitmweb's flow views, so a
    key that reaches any of them comes out the same way.
    """

    def __init__(self, real_keys: Iterable[str]) -> None:
        keys = sorted({k for k in real_keys if len(k) >= 8}, key=len, reverse=True)
        alternatives = [re.escape(k) for k in keys] + [MASTER_KEY_PATTERN]
        self._text = re.compile("|".join(alternatives))
        self._bytes = re.compile("|".join(alternatives).encode())
        self._real = frozenset(keys)

    def _replacement(self, found: str) -> str:
        if found in self._real:
            return "[provider key redacted]"
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
