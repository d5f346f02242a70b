"""Master keys, JWTs, and the places credentials travel in a request.

A master key is ``lmk_`` followed by 43 URL-safe characters (32 random bytes). Only its
SHA-256 is stored. The Hugging Face SDK routes by the ``hf_`` prefix of its token, so
``hf_lmk_…`` is accepted as the same master key. A JWT (`identity.jwt`) travels in the same
places; only a value of its shape is tried as one.
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
# A JWS compact serialisation: three base64url parts, header and payload JSON objects ('{"' is
# "eyJ"). Only a value of this shape is tried as a JWT, and anything of it is scrubbed.
JWT_PATTERN = r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"
_JWT = re.compile(JWT_PATTERN)
MAX_JWT_LENGTH = 16 * 1024
JWT_MARKER = "jwt..."

_HEADER_CARRIERS = (
    Carrier.BEARER,
    Carrier.X_API_KEY,
    Carrier.API_KEY,
    Carrier.GOOG_API_KEY,
    Carrier.WS_PROTOCOL,
)
_CARRIER_BY_HEADER = {c.value.encode(): c for c in _HEADER_CARRIERS}
WS_KEY_PROTOCOL = "openai-insecure-api-key."  # the subprotocol that carries a key


def _ws_protocols(value: str) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()]


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


def is_jwt_shaped(value: str) -> bool:
    return len(value) <= MAX_JWT_LENGTH and _JWT.fullmatch(value) is not None


def jwt_marker(user: str | None) -> str:
    """What stands in for a JWT wherever a flow is shown: ``jwt... (alice)``. No part of the
    token is in it (its tail is its signature; its head is the same for everyone)."""
    return f"{JWT_MARKER} ({user or 'unknown'})"


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
        elif carrier is Carrier.WS_PROTOCOL:
            keys = [p for p in _ws_protocols(value) if p.startswith(WS_KEY_PROTOCOL)]
            if not keys:
                continue
            value = keys[0][len(WS_KEY_PROTOCOL) :]
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
        case Carrier.WS_PROTOCOL:
            others = [
                p
                for p in _ws_protocols(request.headers.get(carrier.value, ""))
                if not p.startswith(WS_KEY_PROTOCOL)
            ]
            request.headers[carrier.value] = ", ".join([*others, WS_KEY_PROTOCOL + value])
        case _:
            request.headers[carrier.value] = value


def clear_credentials(request: http.Request, carriers: Iterable[Carrier]) -> None:
    """Remove credentials from these carriers."""
    for carrier in carriers:
        if carrier is Carrier.QUERY_KEY:
            if "key" in request.query:
                del request.query["key"]
        elif carrier is Carrier.WS_PROTOCOL:
            others = [
                p
                for p in _ws_protocols(request.headers.get(carrier.value, ""))
                if not p.startswith(WS_KEY_PROTOCOL)
            ]
            if others:
                request.headers[carrier.value] = ", ".join(others)
            else:
                request.headers.pop(carrier.value, None)
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
