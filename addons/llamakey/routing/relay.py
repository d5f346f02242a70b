"""The relay: a routed request tries one deployment after the other until one answers, and
that answer streams back through mitmproxy unbuffered.

Why a relay: mitmproxy sends a request upstream once. A 503 or a dropped connection reaches
the addons (`responseheaders`, `error`) with no way to send the request again on the same
flow, and an answer set by an addon in `request` is sent whole, never streamed. So a routed
flow is pointed at this relay, a plain-HTTP server on loopback inside the proxy process
(`steps/route.py`): mitmproxy connects to it as to any upstream, and the relay makes the
attempts itself with an async HTTP client. It forwards an answer only once it is one to keep:
a connection error, or a 429 or 5xx while another deployment is left, is recorded, cools the
deployment down and moves on to the next, and nothing has reached the client yet. From the
kept answer's status line on, bytes go to mitmproxy as they arrive (the gateway's meter, the
scrubber and the client see them at once), so a failure after that is passed on as a broken
answer, never retried, and recorded. The last deployment's answer is passed on whatever its
status: upstream status codes are kept.

A flow finds its route by a one-time token (a random header value that the relay takes out of
its table on first use), so nothing else on the machine that reaches the loopback port can make
the relay send a request: an unknown token gets a 403 and no upstream connection. The real
key of a deployment is put in only by the relay, only into the request to that deployment's
own host (`_target`: the URL's host is the deployment's, or its `connect_to` with Host and TLS
server name still the deployment's).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from mitmproxy import http

from llamakey.config.catalogue import CatalogueModel, Deployment
from llamakey.flowstate import FlowState
from llamakey.providers import Carrier, ErrorShape
from llamakey.refusals import error_body
from llamakey.routing.balancer import Balancer, retry_after_seconds

log = logging.getLogger(__name__)

ROUTE_HEADER = "x-lmk-route"
"""The header that carries a routed flow's one-time token to the relay."""
_MAX_HEAD = 256 * 1024
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
        "host",
        ROUTE_HEADER,
    }
)
_CREDENTIAL_HEADERS = frozenset(c.value for c in Carrier if c is not Carrier.QUERY_KEY)
_OPENAI_ONLY_HEADERS = frozenset({"openai-organization", "openai-project"})


def failover_worthy(status: int) -> bool:
    """A status another deployment may answer better: rate limited or a server error."""
    return status == 429 or status >= 500


@dataclass(slots=True)
class Attempt:
    """One try of one deployment, as the audit row's `attempts` lists it."""

    deployment: str
    status: int | None = None
    error: str | None = None
    ms: float = 0.0

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"deployment": self.deployment, "ms": round(self.ms, 1)}
        if self.status is not None:
            out["status"] = self.status
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(eq=False, slots=True)
class Route:
    """What the relay needs to serve one routed flow."""

    model: CatalogueModel
    api: str  # "chat/completions", "embeddings" or "responses"
    candidates: list[Deployment]  # in the order to try them
    flow: http.HTTPFlow  # its request is final once mitmproxy connects to the relay
    state: FlowState
    attempts: list[Attempt] = field(default_factory=list)


type KeyFor = Callable[[Deployment], str]
type ClientFor = Callable[[], httpx.AsyncClient]


class Relay:
    """The loopback server and the routes waiting for it."""

    def __init__(self, balancer: Balancer, key_for: KeyFor, client_for: ClientFor) -> None:
        self.balancer = balancer
        self._key_for = key_for
        self._client_for = client_for
        self._routes: dict[str, Route] = {}
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=_MAX_HEAD)
            self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def register(self, route: Route) -> str:
        """The token under which the relay serves `route`, once."""
        token = secrets.token_urlsafe(24)
        self._routes[token] = route
        return token

    def forget(self, token: str) -> None:
        self._routes.pop(token, None)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection from mitmproxy: requests one after the other (kept alive, as
        mitmproxy keeps an upstream connection per client connection)."""
        try:
            while (request := await self._read_request(reader)) is not None:
                route = self._routes.pop(request, None)
                if route is None:
                    await _write_error(writer, 403, "unknown route", close=True)
                    return
                if not await self._relay(route, writer):
                    return  # the answer broke off: so does this connection
        except Exception as error:  # never the proxy's end; the flow sees the break
            # The type and text only: a traceback's locals may quote the request.
            log.error("LlaMaKey relay: a routed request failed: %r", error)
            writer.transport.abort()
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> str | None:
        """The token of the next request on the connection ("" when it has none; None at the
        end). Its body is read and dropped: the relay sends the flow's own request."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            return None
        token, length, chunked = "", 0, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip()
            if name == ROUTE_HEADER.encode():
                token = value.decode("ascii", "replace")
            elif name == b"content-length" and value.isdigit():
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            while size := int((await reader.readline()).split(b";")[0].strip() or b"0", 16):
                await reader.readexactly(size + 2)
            while (await reader.readline()) not in (b"\r\n", b""):
                pass  # trailers
        elif length:
            await reader.readexactly(length)
        return token

    async def _relay(self, route: Route, writer: asyncio.StreamWriter) -> bool:
        """Try the route's deployments in turn and pass on the answer to keep; False when the
        connection to mitmproxy cannot go on (an answer broke off)."""
        client = self._client_for()
        last = len(route.candidates) - 1
        for position, deployment in enumerate(route.candidates):
            attempt = Attempt(deployment.name)
            route.attempts.append(attempt)
            started = time.monotonic()
            request = _upstream_request(client, route, deployment, self._key_for(deployment))
            try:
                response = await client.send(request, stream=True)
            except httpx.HTTPError as error:
                attempt.ms = (time.monotonic() - started) * 1000
                attempt.error = _describe(error)
                self.balancer.cool_down(deployment, route.model.cooldown_seconds)
                if position == last:
                    await _write_error(writer, 502, f"no deployment answered: {attempt.error}")
                    return True
                continue
            attempt.ms = (time.monotonic() - started) * 1000
            attempt.status = response.status_code
            if failover_worthy(response.status_code):
                wait = retry_after_seconds(response.headers.get("retry-after"), time.time())
                self.balancer.cool_down(
                    deployment, wait if wait is not None else route.model.cooldown_seconds
                )
                if position < last:
                    with contextlib.suppress(httpx.HTTPError):
                        await response.aread()  # an error body is short: the connection stays
                    await response.aclose()
                    continue
            route.state.deployment = deployment.name
            route.state.upstream_model = deployment.model
            route.state.route_pricing = deployment.pricing
            return await self._pass_on(response, attempt, writer)
        return True

    async def _pass_on(
        self, response: httpx.Response, attempt: Attempt, writer: asyncio.StreamWriter
    ) -> bool:
        """Write the kept answer to mitmproxy as it arrives; a break is passed on as one
        (False: the connection is done)."""
        try:
            sized = "content-length" in response.headers and (
                "transfer-encoding" not in response.headers
            )
            head = [f"HTTP/1.1 {response.status_code} {response.reason_phrase}".encode()]
            for name, value in response.headers.raw:
                if name.lower().decode("latin-1") not in _HOP_BY_HOP:
                    head.append(name + b": " + value)
            if sized:
                head.append(b"content-length: " + response.headers["content-length"].encode())
            else:
                head.append(b"transfer-encoding: chunked")
            writer.write(b"\r\n".join(head) + b"\r\n\r\n")
            await writer.drain()
            try:
                async for chunk, last in _with_end(response.aiter_raw()):
                    framed = chunk if sized or not chunk else b"%X\r\n%b\r\n" % (len(chunk), chunk)
                    # The answer's end goes out with its last chunk: a client that stops
                    # reading at the last event (the openai SDK at `[DONE]`) would otherwise
                    # leave before the end and be recorded as gone mid-answer.
                    writer.write(framed + (b"0\r\n\r\n" if last and not sized else b""))
                    await writer.drain()
            except httpx.HTTPError as error:
                # After the first byte: the client has part of the answer. Not retried;
                # mitmproxy sees the connection break and reports it on the flow.
                attempt.error = f"after the first byte: {_describe(error)}"
                writer.transport.abort()
                return False
            return True
        except (ConnectionError, OSError):
            return False  # mitmproxy closed its side (the client left)
        finally:
            await response.aclose()


END_WINDOW_SECONDS = 0.001
"""How long a chunk waits to learn whether the answer ends right after it."""


async def _with_end(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[bytes, bool]]:
    """Each non-empty chunk, and whether it is the last: a chunk is held back at most
    `END_WINDOW_SECONDS` for the end to follow it (an answer's end comes right after its last
    chunk), never longer, so a stream's cadence is kept."""
    iterator = aiter(chunks)
    pending: asyncio.Future[bytes] = asyncio.ensure_future(anext(iterator))
    held = b""
    try:
        while True:
            if held:
                await asyncio.wait({pending}, timeout=END_WINDOW_SECONDS)
                if not pending.done():
                    yield held, False
                    held = b""
            try:
                chunk = await pending
            except StopAsyncIteration:
                yield held, True
                return
            pending = asyncio.ensure_future(anext(iterator))
            if held:
                yield held, False
            held = chunk
    finally:
        if not pending.done():
            pending.cancel()


def _target(deployment: Deployment, path: str) -> tuple[str, dict[str, Any]]:
    """The URL a request to `deployment` is sent to, and the request's extensions.

    The one place a deployment's address is made: its own host, or the address its
    `connect_to` names, with the TLS server name (and so the certificate checked) still its
    host, so its key reaches only that host.
    """
    if deployment.connect_to is None:
        return f"https://{deployment.authority}{path}", {}
    host, port = deployment.connect_to
    shown = f"[{host}]" if ":" in host else host
    return f"https://{shown}:{port}{path}", {"sni_hostname": deployment.host}


def _upstream_request(
    client: httpx.AsyncClient, route: Route, deployment: Deployment, key: str
) -> httpx.Request:
    """The flow's request as `deployment` takes it: its path and query, its Host, its key in
    its own header, the body's model renamed."""
    request = route.flow.request
    path = deployment.path_for(route.api)
    assert path is not None  # the route step keeps only deployments that serve the API
    url, extensions = _target(deployment, path)
    headers: list[tuple[bytes, bytes]] = [(b"host", deployment.authority.encode())]
    for raw_name, value in request.headers.fields:
        name = raw_name.lower().decode("latin-1")
        if name in _HOP_BY_HOP or name in _CREDENTIAL_HEADERS:
            continue
        if deployment.kind != "openai" and name in _OPENAI_ONLY_HEADERS:
            continue
        headers.append((raw_name, value))
    header, credential = _credential(deployment.carrier, key)
    headers.append((header.encode(), credential.encode()))
    return client.build_request(
        request.method,
        url,
        headers=headers,
        content=_with_model(request.raw_content or b"", deployment.body_model),
        extensions=extensions,
    )


def _credential(carrier: Carrier, key: str) -> tuple[str, str]:
    """The header that carries `key` where `carrier` says (Bearer or a key header)."""
    return ("authorization", f"Bearer {key}") if carrier is Carrier.BEARER else (carrier.value, key)


def _with_model(body: bytes, model: str) -> bytes:
    """The JSON body with its ``model`` set to the deployment's name for it."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body
    if not isinstance(parsed, dict) or "model" not in parsed:
        return body
    parsed["model"] = model
    return json.dumps(parsed, separators=(",", ":"), ensure_ascii=False).encode()


def _describe(error: httpx.HTTPError) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"[:200]


async def _write_error(
    writer: asyncio.StreamWriter, status: int, message: str, *, close: bool = False
) -> None:
    shaped = error_body(ErrorShape.OPENAI, status, f"LlaMaKey: {message}", "no_deployment")
    body = json.dumps(shaped).encode()
    head = [
        f"HTTP/1.1 {status} Error",
        "content-type: application/json",
        f"content-length: {len(body)}",
        *(["connection: close"] if close else []),
    ]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    with contextlib.suppress(ConnectionError, OSError):
        await writer.drain()


def upstream_client(context: ssl.SSLContext, idle_timeout: float) -> httpx.AsyncClient:
    """The relay's client: HTTP/1.1, our upstream trust, no proxy from the environment."""
    return httpx.AsyncClient(
        verify=context,
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(connect=10.0, read=idle_timeout, write=60.0, pool=10.0),
    )
