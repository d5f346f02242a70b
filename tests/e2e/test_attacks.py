"""Attacks on the gateway, each as a client would send it: raw sockets and raw TLS wherever an
SDK cannot send what an attacker would (no SNI, invalid UTF-8 header bytes, absolute-form
targets). Each test asserts what the attacker gets back, what the provider (the mock) receives
and what the audit log says.

This file: one provider's key never travels to another (cross-provider routing), and
authentication never fails open. The raw client helpers here serve the other attack files too:
test_attacks_echo.py (real keys echoed back), test_attacks_saved.py (saved flows) and
test_attacks_proxyauth.py (`proxy_auth = true`).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import http.client
import io
import json
import re
import socket
import ssl
import zlib
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import key_problems
from tests.e2e.test_audit import ids, new_row
from tests.harness import REAL_KEYS, Gateway
from tests.mock_upstream import MockUpstream, Seen

# --------------------------------------------------------------------------------------------
# A raw client: CONNECT, TLS as we choose it, bytes as we choose them
# --------------------------------------------------------------------------------------------


@dataclass
class Answer:
    """Everything the client got for one request on a connection it then read to the end."""

    raw: bytes  # every byte received after the request was sent (inside TLS if tunneled)
    status: int
    headers: list[tuple[str, str]]
    body: bytes  # de-chunked; still compressed if it was sent compressed

    def header(self, name: str) -> str | None:
        lname = name.lower()
        return next((v for k, v in self.headers if k.lower() == lname), None)

    @property
    def content(self) -> bytes:
        """The body as the client's HTTP library would hand it over: decompressed."""
        encoding = (self.header("content-encoding") or "identity").lower()
        if encoding == "gzip":
            return gzip.decompress(self.body)
        if encoding == "deflate":
            return zlib.decompress(self.body)
        return self.body

    def json(self) -> Any:
        return json.loads(self.content)

    def holds(self, secret: str) -> list[str]:
        """Where `secret` shows up in what the client got: raw bytes, de-chunked body,
        decompressed body, a header."""
        needle = secret.encode()
        found = [
            where
            for where, blob in (("raw bytes", self.raw), ("body", self.body))
            if needle in blob
        ]
        with contextlib.suppress(OSError, EOFError, zlib.error):
            if needle in self.content:
                found.append("decoded body")
        found += [f"header {k}" for k, v in self.headers if secret in v]
        return found


class _Replay:
    """Stands in for a socket so that http.client parses bytes already read."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def makefile(self, mode: str, *args: object, **kwargs: object) -> io.BytesIO:
        return io.BytesIO(self._data)


def parse_answer(raw: bytes, method: str = "GET") -> Answer:
    response = http.client.HTTPResponse(_Replay(raw), method=method)  # type: ignore[arg-type]
    response.begin()
    body = response.read()
    return Answer(raw=raw, status=response.status, headers=response.getheaders(), body=body)


def gateway_ca(gateway: Gateway) -> str:
    return str(gateway.workdir / "certs" / "mitmproxy-ca-cert.pem")


def tls_context(gateway: Gateway, *, check_hostname: bool = True) -> ssl.SSLContext:
    """A client context trusting only the gateway's CA."""
    context = ssl.create_default_context(cafile=gateway_ca(gateway))
    context.check_hostname = check_hostname
    context.set_alpn_protocols(["http/1.1"])
    return context


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def read_head(sock: socket.socket) -> bytes:
    """Read up to the end of a response head, one byte at a time: nothing after it is taken."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        if not byte:
            break
        head += byte
    return head


def connect(
    gateway: Gateway, authority: str, proxy_authorization: str | None = None
) -> tuple[int, bytes, socket.socket]:
    """Send CONNECT to the gateway; the status, the answer head, and the open socket."""
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy_authorization:
        lines.append(f"Proxy-Authorization: {proxy_authorization}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = read_head(sock)
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    return (int(match.group(1)) if match else 0), head, sock


def tunnel(
    gateway: Gateway,
    host: str,
    *,
    sni: str | None,
    port: int = 443,
    proxy_authorization: str | None = None,
) -> ssl.SSLSocket:
    """A TLS connection through the gateway to host:port, with `sni` as the TLS server name.

    With `sni` None the ClientHello carries no server name, and the certificate is not checked:
    mitmproxy then forges it for the proxy's own IP address, which our name-constrained CA
    excludes, so only a client that skips verification (an attacker) gets this far.
    """
    status, head, sock = connect(gateway, f"{host}:{port}", proxy_authorization)
    if status != 200:
        sock.close()
        raise AssertionError(f"CONNECT {host}:{port} answered {head!r}")
    context = tls_context(gateway, check_hostname=sni is not None)
    if sni is None:
        context.verify_mode = ssl.CERT_NONE
    return context.wrap_socket(sock, server_hostname=sni)


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ssl.SSLEOFError, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
    return data


def raw_request(
    method: str,
    target: str,
    headers: list[tuple[str, str | bytes]],
    body: bytes = b"",
) -> bytes:
    """An HTTP/1.1 request exactly as given (header values may be raw bytes), asking the
    server to close the connection after its answer."""
    lines = [f"{method} {target} HTTP/1.1".encode()]
    for name, value in [*headers, ("Connection", "close")]:
        lines.append(
            name.encode() + b": " + (value if isinstance(value, bytes) else value.encode())
        )
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def exchange(sock: socket.socket, request: bytes, method: str = "GET") -> Answer:
    """Send one request, read the connection to its end, parse the answer."""
    with sock:
        sock.sendall(request)
        return parse_answer(read_all(sock), method)


def send(
    gateway: Gateway,
    host: str,
    method: str,
    target: str,
    headers: list[tuple[str, str | bytes]],
    body: bytes = b"",
    *,
    sni: str | None = "",
    connect_host: str | None = None,
) -> Answer:
    """One request in its own tunnel to `connect_host` (default: `host`), with Host `host`;
    `sni` "" means the tunnel's own host name."""
    to = connect_host or host
    sock = tunnel(gateway, to, sni=to if sni == "" else sni)
    return exchange(sock, raw_request(method, target, [("Host", host), *headers], body), method)


def everything(seen: Seen) -> bytes:
    """One request as the provider received it, as one blob to search."""
    head = "\n".join(f"{k}: {v}" for k, v in seen.headers)
    return f"{seen.method} {seen.path}\n{head}\n".encode("latin-1", "replace") + seen.body


CHAT = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})


# --------------------------------------------------------------------------------------------
# 1. Cross-provider key routing
# --------------------------------------------------------------------------------------------


def assert_misdirected(
    gateway: Gateway, mock: MockUpstream, answer: Answer, before: set[str], provider: str
) -> None:
    assert answer.status == 421, answer.raw[:2000]
    assert answer.header("x-lmk-refused") == "misdirected"
    assert mock.seen == [], [(s.host, s.path) for s in mock.seen]
    row = new_row(gateway.audit_db, before)
    assert (row["refused_by"], row["provider"], row["status"]) == ("misdirected", provider, 421)


def test_no_sni_groq_tunnel_with_openai_host_is_misdirected(
    gateway: Gateway, mock: MockUpstream
) -> None:
    """CONNECT api.groq.com, TLS without SNI, `Host: api.openai.com` and alice's key: the
    request would take groq's key to a request meant for OpenAI (or OpenAI's to Groq)."""
    mock.clear()
    before = ids(gateway.audit_db)
    answer = send(
        gateway,
        "api.openai.com",
        "POST",
        "/v1/chat/completions",
        [
            ("Authorization", f"Bearer {gateway.keys['alice']}"),
            ("Content-Type", "application/json"),
        ],
        CHAT.encode(),
        sni=None,
        connect_host="api.groq.com",
    )
    assert_misdirected(gateway, mock, answer, before, "groq")


def test_wildcard_host_tunnel_with_anthropic_host_is_misdirected(
    gateway: Gateway, mock: MockUpstream
) -> None:
    """CONNECT to a made-up Hugging Face endpoint (the `*.endpoints.huggingface.cloud` wildcard
    lets anyone name one) carrying `Host: api.anthropic.com`."""
    mock.clear()
    before = ids(gateway.audit_db)
    answer = send(
        gateway,
        "api.anthropic.com",
        "GET",
        "/v1/models",
        [("x-api-key", gateway.keys["alice"]), ("anthropic-version", "2023-06-01")],
        connect_host="mallory.endpoints.huggingface.cloud",
    )
    assert_misdirected(gateway, mock, answer, before, "huggingface")


def test_no_sni_and_foreign_host_in_provider_tunnel_is_refused_and_audited(
    gateway: Gateway, mock: MockUpstream
) -> None:
    """No SNI and `Host: evil.example` inside OpenAI's tunnel: once forwarded with the raw
    master key and no audit row; now a 421 in the log."""
    mock.clear()
    before = ids(gateway.audit_db)
    answer = send(
        gateway,
        "evil.example",
        "GET",
        "/v1/models",
        [("Authorization", f"Bearer {gateway.keys['alice']}")],
        sni=None,
        connect_host="api.openai.com",
    )
    assert_misdirected(gateway, mock, answer, before, "openai")
    assert answer.holds(gateway.keys["alice"]) == []


def test_absolute_form_target_naming_another_provider_is_misdirected(
    gateway: Gateway, mock: MockUpstream
) -> None:
    mock.clear()
    before = ids(gateway.audit_db)
    answer = send(
        gateway,
        "api.openai.com",
        "GET",
        "https://api.anthropic.com/v1/models",
        [("Authorization", f"Bearer {gateway.keys['alice']}")],
    )
    assert_misdirected(gateway, mock, answer, before, "openai")


# --------------------------------------------------------------------------------------------
# 2. Authentication never fails open
# --------------------------------------------------------------------------------------------

AUTH_CASES = {
    # name: (host, path, [(header, which key)]): "bad" is alice's key with a byte made 0xff
    "openai-bad-bearer": ("api.openai.com", "/v1/models", [("Authorization", "bad")]),
    "openai-bad-bearer-then-x-api-key": (
        "api.openai.com",
        "/v1/models",
        [("Authorization", "bad"), ("x-api-key", "good")],
    ),
    "anthropic-bad-x-api-key-then-bearer": (
        "api.anthropic.com",
        "/v1/models",
        [("x-api-key", "bad"), ("Authorization", "good")],
    ),
    "gemini-bad-goog-then-bearer": (
        "generativelanguage.googleapis.com",
        "/v1beta/models",
        [("x-goog-api-key", "bad"), ("Authorization", "good")],
    ),
}


@pytest.mark.parametrize("case", list(AUTH_CASES))
def test_invalid_utf8_key_is_refused_or_authenticated_never_forwarded(
    gateway: Gateway, mock: MockUpstream, case: str
) -> None:
    host, path, carriers = AUTH_CASES[case]
    key = gateway.keys["alice"]
    bad = b"lmk_\xff\xfe" + key[6:].encode()  # as long as a key; not UTF-8
    headers: list[tuple[str, str | bytes]] = []
    for name, which in carriers:
        value = bad if which == "bad" else key.encode()
        headers.append((name, b"Bearer " + value if name == "Authorization" else value))
    mock.clear()
    before = ids(gateway.audit_db)
    answer = send(gateway, host, "GET", path, headers)
    row = new_row(gateway.audit_db, before)
    assert answer.holds(key) == [] and answer.holds(key[4:]) == []
    if answer.status == 401:
        assert mock.seen == []
        assert row["refused_by"] == "unknown_master_key" and row["user"] is None
    else:
        assert answer.status == 200, answer.raw[:2000]
        assert any(which == "good" for _, which in carriers), "authenticated on a wrong key"
        assert row["user"] == "alice" and row["refused_by"] is None
        [seen] = mock.seen
        assert seen.sni == host
        assert REAL_KEYS[row["provider"]].encode() in everything(seen)
    for seen in mock.seen:
        blob = everything(seen)
        assert b"lmk_" not in blob and b"\xff" not in blob and key[4:].encode() not in blob, seen


# --------------------------------------------------------------------------------------------
# 7. Our own request ids do not look like master keys
# --------------------------------------------------------------------------------------------


def test_anthropic_refusal_request_id_is_shown_intact(gateway: Gateway, mock: MockUpstream) -> None:
    mock.clear()
    answer = send(
        gateway,
        "api.anthropic.com",
        "GET",
        "/v1/models",
        [("x-api-key", "lmk_" + "n" * 43), ("anthropic-version", "2023-06-01")],
    )
    assert answer.status == 401, answer.raw[:2000]
    request_id = answer.json()["request_id"]
    assert re.fullmatch(r"req_[A-Za-z0-9_]{16,}", request_id), request_id
    assert "*" not in request_id and "..." not in request_id
    assert mock.seen == []


# --------------------------------------------------------------------------------------------
# The session-wide check itself (tests/conftest.py)
# --------------------------------------------------------------------------------------------


def test_session_check_names_what_went_astray() -> None:
    """The end-of-session check flags a master key anywhere in a request and a real key on a
    connection opened for another provider's host, naming the request."""

    def seen(sni: str | None, path: str = "/v1/models", **headers: str) -> Seen:
        return Seen("h", "GET", path, list(headers.items()), b"", 0.0, "mock-000042", sni)

    master = "lmk_" + "A" * 43
    openai = REAL_KEYS["openai"]
    assert key_problems(seen("api.openai.com", authorization=f"Bearer {openai}")) == []
    assert key_problems(seen("myres.openai.azure.com", **{"api-key": REAL_KEYS["azure"]})) == []
    assert key_problems(seen("x.endpoints.huggingface.cloud", x=REAL_KEYS["huggingface"])) == []
    [problem] = key_problems(seen("api.groq.com", authorization=f"Bearer {openai}"))
    assert "mock-000042 GET '/v1/models'" in problem and "SNI 'api.groq.com'" in problem
    assert "openai's real key in its header authorization" in problem
    assert key_problems(seen(None, authorization=f"Bearer {openai}"))
    assert key_problems(seen("api.openai.com", path="/v1/models?x=hf_" + master))
    assert key_problems(seen("api.openai.com", path="/v1/models?x=%6c%6d%6b_" + "A" * 43))
    [problem] = key_problems(seen("api.openai.com", **{"x-note": master}))
    assert "a master key in its header x-note" in problem
