"""The access-token gate in front of Datasette (llamakey.browse.gate), driven as an ASGI app:
the printed address logs in (cookie, redirect without the token); nothing else gets through."""

from __future__ import annotations

from typing import Any

import pytest

from llamakey.browse.gate import TOKEN_PARAM, Message, Scope, cookie_name, gate

TOKEN = "s3cret-TOKEN_value"
COOKIE = cookie_name(8001)


class App:
    """Stands for Datasette: records what reaches it and answers 200."""

    def __init__(self) -> None:
        self.seen: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        self.seen.append(scope)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"datasette"})


async def call(
    app: Any, path: str = "/lmk_audit", query: bytes = b"", cookie: str | None = None
) -> tuple[int, dict[bytes, bytes], bytes]:
    headers = [(b"host", b"127.0.0.1:8001")]
    if cookie is not None:
        headers.append((b"cookie", cookie.encode()))
    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": headers,
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, body = sent
    return start["status"], dict(start["headers"]), body["body"]


@pytest.fixture
def inner() -> App:
    return App()


async def test_no_cookie_no_token_is_forbidden(inner: App) -> None:
    status, headers, body = await call(gate(inner, token=TOKEN, cookie=COOKIE))
    assert status == 403 and b"lmk audit browse" in body
    assert headers[b"cache-control"] == b"no-store"
    assert inner.seen == []


@pytest.mark.parametrize(
    "cookie",
    [f"{COOKIE}=wrong", f"{COOKIE}=", f"other={TOKEN}", f"{cookie_name(8002)}={TOKEN}", "junk"],
)
async def test_a_wrong_or_foreign_cookie_is_forbidden(inner: App, cookie: str) -> None:
    status, _, _ = await call(gate(inner, token=TOKEN, cookie=COOKIE), cookie=cookie)
    assert status == 403 and inner.seen == []


async def test_the_token_sets_the_cookie_and_redirects_without_it(inner: App) -> None:
    query = f"_sort=ts&{TOKEN_PARAM}={TOKEN}&user=a%20b".encode()
    status, headers, _ = await call(
        gate(inner, token=TOKEN, cookie=COOKIE), "/lmk_audit/requests", query
    )
    assert status == 302
    assert headers[b"location"] == b"/lmk_audit/requests?_sort=ts&user=a%20b"
    assert headers[b"set-cookie"] == f"{COOKIE}={TOKEN}; Path=/; HttpOnly; SameSite=Strict".encode()
    assert headers[b"referrer-policy"] == b"no-referrer"
    assert inner.seen == []  # the redirect is the gate's own answer


async def test_the_token_alone_redirects_to_the_bare_path(inner: App) -> None:
    status, headers, _ = await call(
        gate(inner, token=TOKEN, cookie=COOKIE), "/", f"{TOKEN_PARAM}={TOKEN}".encode()
    )
    assert (status, headers[b"location"]) == (302, b"/")


@pytest.mark.parametrize("offered", ["wrong", "", TOKEN + "x", "é"])
async def test_a_wrong_token_is_forbidden_and_sets_nothing(inner: App, offered: str) -> None:
    query = f"{TOKEN_PARAM}={offered}".encode()
    status, headers, _ = await call(gate(inner, token=TOKEN, cookie=COOKIE), query=query)
    assert status == 403 and b"set-cookie" not in headers and inner.seen == []


async def test_the_cookie_lets_requests_through_unchanged(inner: App) -> None:
    app = gate(inner, token=TOKEN, cookie=COOKIE)
    status, _, body = await call(app, query=b"_shape=array", cookie=f"a=1; {COOKIE}={TOKEN}; b=2")
    assert (status, body) == (200, b"datasette")
    [scope] = inner.seen
    assert scope["path"] == "/lmk_audit" and scope["query_string"] == b"_shape=array"


async def test_other_asgi_events_pass(inner: App) -> None:
    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        raise AssertionError(message)

    await gate(inner, token=TOKEN, cookie=COOKIE)({"type": "lifespan"}, receive, send)
    assert [s["type"] for s in inner.seen] == ["lifespan"]


def test_there_is_no_gate_without_a_token(inner: App) -> None:
    with pytest.raises(ValueError, match="token"):
        gate(inner, token="", cookie=COOKIE)
