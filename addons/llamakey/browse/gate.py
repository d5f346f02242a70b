"""The access-token gate in front of Datasette: an ASGI middleware.

Binding to loopback keeps the network out, but not the other users of the machine: every local
user can connect to ``127.0.0.1``, while the audit database itself is a 0600 file. So
``lmk audit browse`` makes a random token, hands it to Datasette's process in its environment
(never its arguments, which every local user can read), and prints an address carrying it.

Opening that address (``?lmk_token=…``) sets a session cookie and redirects to the same page
without the token, so it does not linger in the address bar, history or ``Referer``. Every
other request needs the cookie; without it the answer is 403. The cookie's name carries the
port, so two instances on one host do not log each other out (browsers share cookies across a
host's ports).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final
from urllib.parse import unquote_plus

__all__ = ["COOKIE_ENV", "TOKEN_ENV", "TOKEN_PARAM", "ASGIApp", "cookie_name", "gate"]

type Scope = MutableMapping[str, Any]
type Message = MutableMapping[str, Any]
type Receive = Callable[[], Awaitable[Message]]
type Send = Callable[[Message], Awaitable[None]]
type ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The query parameter of the printed address.
TOKEN_PARAM: Final = "lmk_token"
#: Environment variables that hand the token and the cookie's name to Datasette's process.
TOKEN_ENV: Final = "LMK_BROWSE_TOKEN"
COOKIE_ENV: Final = "LMK_BROWSE_COOKIE"

_FORBIDDEN: Final = (
    b"LlaMaKey audit browser: open the address that `lmk audit browse` printed; it carries the "
    b"access token.\n"
)


def cookie_name(port: int) -> str:
    return f"lmk_browse_{port}"


def _same(offered: str, token: str) -> bool:
    return hmac.compare_digest(offered.encode("utf-8", "replace"), token.encode())


def _split_token(query: bytes) -> tuple[str | None, bytes]:
    """The token offered in a raw query string (the last one, if repeated), and the query
    string without it, every other parameter kept byte for byte."""
    offered: str | None = None
    kept: list[bytes] = []
    for part in query.split(b"&"):
        name, _, value = part.partition(b"=")
        if unquote_plus(name.decode("latin-1")) == TOKEN_PARAM:
            offered = unquote_plus(value.decode("latin-1"))
        elif part:
            kept.append(part)
    return offered, b"&".join(kept)


def _cookie(scope: Scope, name: str) -> str | None:
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    for header, value in headers:
        if header.lower() != b"cookie":
            continue
        for pair in value.decode("latin-1").split(";"):
            key, sep, cookie = pair.strip().partition("=")
            if sep and key == name:
                return cookie
    return None


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (b"referrer-policy", b"no-referrer"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def gate(app: ASGIApp, *, token: str, cookie: str) -> ASGIApp:
    """``app`` behind the token: HTTP requests pass only with cookie ``cookie`` equal to
    ``token``; a request offering the token in ``?lmk_token=`` is answered with that cookie and
    a redirect to the same address without it. Other ASGI events (lifespan) pass."""
    if not token:
        raise ValueError("the browse gate needs a token")

    async def gated(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        offered, rest = _split_token(scope.get("query_string", b""))
        if offered is not None:
            if not _same(offered, token):
                await _respond(send, 403, [(b"content-type", b"text/plain")], _FORBIDDEN)
                return
            path: bytes = scope.get("raw_path") or scope["path"].encode()
            location = path + (b"?" + rest if rest else b"")
            set_cookie = f"{cookie}={token}; Path=/; HttpOnly; SameSite=Strict".encode()
            await _respond(send, 302, [(b"location", location), (b"set-cookie", set_cookie)], b"")
            return
        held = _cookie(scope, cookie)
        if held is None or not _same(held, token):
            await _respond(send, 403, [(b"content-type", b"text/plain")], _FORBIDDEN)
            return
        await app(scope, receive, send)

    return gated
