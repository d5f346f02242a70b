"""Only provider hosts are intercepted: everything else is tunneled untouched, or refused under
`other_hosts = "block"`; `proxy_auth = true` makes every CONNECT prove a master key."""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mitmproxy import certs

from tests.conftest import make_gateway
from tests.harness import REAL_KEYS, Gateway, run_client
from tests.mock_upstream import MockUpstream


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from the origin"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def origin() -> Iterator[tuple[int, trustme.CA]]:
    """An HTTPS site that is no LLM provider, with a certificate from its own CA."""
    ca = trustme.CA(organization_name="Origin Test CA")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], ca
    server.shutdown()


def connect_through(
    proxy_port: int, host: str, port: int, context: ssl.SSLContext, proxy_auth: str | None = None
) -> http.client.HTTPSConnection:
    conn = http.client.HTTPSConnection("127.0.0.1", proxy_port, context=context, timeout=10)
    headers = (
        {"Proxy-Authorization": f"Basic {base64.b64encode(proxy_auth.encode()).decode()}"}
        if proxy_auth
        else None
    )
    conn.set_tunnel(host, port, headers=headers)
    return conn


def test_non_provider_https_is_tunneled_untouched(
    gateway: Gateway, origin: tuple[int, trustme.CA]
) -> None:
    port, ca = origin
    context = ssl.create_default_context()
    ca.configure_trust(context)  # trusts only the origin's CA: our proxy's CA would fail here
    conn = connect_through(gateway.port, "localhost", port, context)
    conn.connect()
    sock = conn.sock
    assert isinstance(sock, ssl.SSLSocket)
    cert = sock.getpeercert()
    assert cert is not None
    # typeshed's _PeerCertRetDictType is loose; the issuer is ((("name", "value"),), ...).
    rdns: tuple[tuple[tuple[str, str], ...], ...] = cert["issuer"]  # type: ignore[assignment]
    issuer = dict(rdn[0] for rdn in rdns)
    assert issuer["organizationName"] == "Origin Test CA"
    conn.request("GET", "/")
    assert conn.getresponse().read() == b"hello from the origin"


@pytest.fixture(scope="module")
def blocking_gateway(
    tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream
) -> Iterator[Gateway]:
    gw = make_gateway(tmp_path_factory.mktemp("block"), mock, proxy_table={"other_hosts": "block"})
    gw.start()
    yield gw
    gw.stop()


def test_block_mode_refuses_other_hosts_but_serves_providers(
    blocking_gateway: Gateway, origin: tuple[int, trustme.CA], mock: MockUpstream
) -> None:
    port, ca = origin
    context = ssl.create_default_context()
    ca.configure_trust(context)
    conn = connect_through(blocking_gateway.port, "localhost", port, context)
    with pytest.raises(OSError, match="403"):
        conn.request("GET", "/")
    mock.clear()
    ok = run_client(
        "from openai import OpenAI\nprint(OpenAI().models.list().data[0].id)",
        blocking_gateway.client_env("alice"),
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert mock.seen and mock.seen[0].header("authorization") == f"Bearer {REAL_KEYS['openai']}"


@pytest.fixture(scope="module")
def auth_gateway(tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream) -> Iterator[Gateway]:
    gw = make_gateway(tmp_path_factory.mktemp("proxyauth"), mock, proxy_table={"proxy_auth": True})
    gw.start()
    yield gw
    gw.stop()


def _trust_gateway(gateway: Gateway) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(gateway.workdir / "certs" / "client-bundle.pem"))


def test_proxy_auth_requires_a_master_key_on_connect(
    auth_gateway: Gateway, mock: MockUpstream
) -> None:
    context = _trust_gateway(auth_gateway)
    for credentials in (None, "alice:lmk_" + "w" * 43):
        conn = connect_through(auth_gateway.port, "api.openai.com", 443, context, credentials)
        with pytest.raises(OSError, match="407"):
            conn.request("GET", "/v1/models")
    mock.clear()
    conn = connect_through(
        auth_gateway.port, "api.openai.com", 443, context, f"alice:{auth_gateway.keys['alice']}"
    )
    # The SDK's own key may be anything: the tunnel's proxy credentials identify alice.
    conn.request("GET", "/v1/models", headers={"Authorization": "Bearer placeholder"})
    response = conn.getresponse()
    assert response.status == 200, response.read()
    [seen] = mock.seen
    assert seen.header("authorization") == f"Bearer {REAL_KEYS['openai']}"


def test_sdk_with_proxy_credentials_from_lmk_env(auth_gateway: Gateway, mock: MockUpstream) -> None:
    env = auth_gateway.client_env("bob")
    assert f"bob:{auth_gateway.keys['bob']}@" in env["HTTPS_PROXY"]
    mock.clear()
    result = run_client(
        "import anthropic\nprint(anthropic.Anthropic().models.list().data[0].id)", env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert mock.seen


def test_leaf_for_non_provider_from_our_ca_fails_verification(gateway: Gateway) -> None:
    """Even the proxy's own CA cannot vouch for a host outside the provider list."""
    store = certs.CertStore.from_store(str(gateway.workdir / "certs"), "mitmproxy", 2048)
    for host in ("example.com", "api.openai.com"):
        entry = store.get_cert(host, [x509.DNSName(host)])
        leaf = gateway.workdir / f"{host}.pem"
        leaf.write_bytes(
            entry.cert.to_pem()
            + entry.privatekey.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        ok = _handshake(leaf, gateway.workdir / "certs" / "mitmproxy-ca-cert.pem", host)
        assert ok == (host == "api.openai.com"), host


def _handshake(leaf: Path, ca_file: Path, host: str) -> bool:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(leaf)
    client_ctx = ssl.create_default_context(cafile=str(ca_file))

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    result: list[bool] = []

    def serve() -> None:
        sock, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(sock, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            client_ctx.wrap_socket(raw, server_hostname=host),
        ):
            result.append(True)
    except ssl.SSLCertVerificationError as error:
        assert "subtree" in str(error) or "certificate verify failed" in str(error)
        result.append(False)
    thread.join(5)
    listener.close()
    return result[0]


def test_invalid_config_edit_is_refused_and_the_running_config_stays(
    tmp_path: Path, mock: MockUpstream
) -> None:
    gw = make_gateway(tmp_path, mock)
    gw.start()
    try:
        env = gw.client_env("alice")  # before the file breaks: `lmk env` reads it too
        good = gw.config.read_text()
        gw.config.write_text(good.replace("[proxy]", "[proxy]\nlisten_prot = 1", 1))
        deadline = time.monotonic() + 10
        while "Configuration not reloaded" not in gw.log.read_text():
            assert time.monotonic() < deadline, gw.log.read_text()
            time.sleep(0.2)
        assert "proxy.listen_prot" in gw.log.read_text()  # the error names the TOML path
        mock.clear()
        ok = run_client("from openai import OpenAI\nprint(OpenAI().models.list().data[0].id)", env)
        assert ok.returncode == 0, ok.stderr[-2000:]  # still serving on the old config
        assert mock.seen
    finally:
        gw.stop()
