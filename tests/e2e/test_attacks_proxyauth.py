"""`proxy_auth = true`: every use of the proxy must prove a master key of a user who may use it
now, tunnels to any host and plain-HTTP proxying alike."""

from __future__ import annotations

import secrets
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llamakey import credentials
from tests.conftest import make_gateway
from tests.e2e.test_attacks import basic, connect, parse_answer, raw_request, read_all
from tests.harness import Gateway
from tests.mock_upstream import MockUpstream


class _Origin(ThreadingHTTPServer):
    """A plain-HTTP site that is no provider; it records every request it gets."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Hello)
        self.paths: list[str] = []


class _Hello(BaseHTTPRequestHandler):
    server: _Origin

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        body = b"hello from the origin"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def origin() -> Iterator[_Origin]:
    server = _Origin()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _user(name: str, key: str, extra: str) -> str:
    return f'[users.{name}]\nkey_sha256 = "{credentials.key_sha256(key)}"\n{extra}\n'


@pytest.fixture(scope="module")
def auth_gateway(tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream) -> Iterator[Gateway]:
    """proxy_auth = true, with alice and bob, dave (disabled) and erin (expired)."""
    dave, erin = (credentials.MASTER_PREFIX + secrets.token_urlsafe(32) for _ in range(2))
    gw = make_gateway(
        tmp_path_factory.mktemp("attack-proxyauth"),
        mock,
        proxy_table={"proxy_auth": True},
        extra_toml=_user("dave", dave, "disabled = true")
        + _user("erin", erin, "expires = 2020-01-01T00:00:00Z"),
    )
    gw.keys.update(dave=dave, erin=erin)
    gw.start()
    yield gw
    gw.stop()


def _targets(origin: _Origin) -> dict[str, str]:
    return {"provider": "api.openai.com:443", "other": f"127.0.0.1:{origin.server_address[1]}"}


@pytest.mark.parametrize("target", ["provider", "other"])
def test_valid_user_opens_tunnels(auth_gateway: Gateway, origin: _Origin, target: str) -> None:
    status, head, sock = connect(
        auth_gateway,
        _targets(origin)[target],
        basic(f"alice:{auth_gateway.keys['alice']}"),
    )
    sock.close()
    assert status == 200, head


@pytest.mark.parametrize("target", ["provider", "other"])
@pytest.mark.parametrize("user", ["dave", "erin"], ids=["disabled", "expired"])
def test_disabled_or_expired_user_cannot_open_tunnels(
    auth_gateway: Gateway, origin: _Origin, user: str, target: str
) -> None:
    status, head, sock = connect(
        auth_gateway, _targets(origin)[target], basic(f"{user}:{auth_gateway.keys[user]}")
    )
    sock.close()
    assert status == 407, head


@pytest.mark.parametrize("target", ["example.test", "origin"])
def test_plain_http_proxying_requires_proxy_credentials(
    auth_gateway: Gateway, origin: _Origin, target: str
) -> None:
    authority = "example.test" if target == "example.test" else _targets(origin)["other"]
    origin.paths.clear()
    with socket.create_connection(("127.0.0.1", auth_gateway.port), timeout=10) as sock:
        sock.sendall(raw_request("GET", f"http://{authority}/", [("Host", authority)]))
        answer = parse_answer(read_all(sock))
    assert origin.paths == [], "relayed without proxy credentials"
    assert answer.status == 407, answer.raw[:2000]
