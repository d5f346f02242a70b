"""Clients the security tests use against a running gateway: httpx through the proxy, a raw
CONNECT + TLS handshake that reads the forged certificate, mitmweb's API with its token, and a
listener standing in for an attacker's host."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from cryptography import x509

from tests.harness import Gateway

#: Any value works for tornado's double-submit XSRF check: cookie and header must agree.
XSRF = "ab" * 16


def call_openai(gateway: Gateway, user: str = "alice") -> httpx.Response:
    """GET https://api.openai.com/v1/models through the proxy with `user`'s master key."""
    bundle = gateway.workdir / "certs" / "client-bundle.pem"
    with httpx.Client(
        proxy=f"http://127.0.0.1:{gateway.port}",
        verify=ssl.create_default_context(cafile=str(bundle)),
        timeout=10,
        trust_env=False,
    ) as client:
        return client.get(
            "https://api.openai.com/v1/models",
            headers={"Authorization": f"Bearer {gateway.keys[user]}"},
        )


def served_leaf(proxy_port: int, target: str, sni: str | None) -> x509.Certificate:
    """The certificate the proxy presents after ``CONNECT target`` and a ClientHello with
    server name `sni` (None: no server name at all)."""
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as raw:
        raw.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = raw.recv(4096)
            assert chunk, f"proxy closed the CONNECT: {head!r}"
            head += chunk
        assert head.startswith(b"HTTP/1.1 200"), head
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # we read the certificate, whatever it says
        with context.wrap_socket(raw, server_hostname=sni) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def san_names(cert: x509.Certificate) -> list[object]:
    """Every subjectAltName entry (DNS names as text, IP addresses as ipaddress objects)."""
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [name.value for name in names]


def web_address(gateway: Gateway) -> tuple[str, str]:
    """mitmweb's base URL and token, from the one banner line that prints them."""
    for line in gateway.log.read_text().splitlines():
        if "mitmweb:" in line:
            url = line.split("mitmweb:", 1)[1].strip()
            base, _, token = url.partition("/?token=")
            return base, token
    raise AssertionError("lmk web printed no mitmweb URL")


@contextmanager
def web_ui(gateway: Gateway, *, token_in_url: bool = False) -> Iterator[httpx.Client]:
    """An HTTP client for mitmweb's API holding the token (as a bearer header, or in every
    URL's query) and a matching XSRF cookie/header pair, as an attacker with the token has."""
    base, token = web_address(gateway)
    headers = {"X-XSRFToken": XSRF}
    params = {}
    if token_in_url:
        params["token"] = token
    else:
        headers["Authorization"] = f"Bearer {token}"
    with httpx.Client(
        base_url=base,
        headers=headers,
        params=params,
        cookies={"_mitmproxy_xsrf": XSRF},
        timeout=10,
        trust_env=False,
    ) as client:
        yield client


@contextmanager
def attacker_listener() -> Iterator[socket.socket]:
    """A listening socket no one accepts on: whatever connects stays in its backlog, so
    `reached` tells without threads or waiting whether anything ever dialed it."""
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        yield listener
    finally:
        listener.close()


def reached(listener: socket.socket) -> bool:
    """Whether any connection arrived at `listener` (pending in its backlog)."""
    listener.setblocking(False)
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True
