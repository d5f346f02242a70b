"""The certificate the proxy forges for a client names exactly the host asked for: the TLS
server name, or without one the CONNECT target's host; never an IP address, never a second
host. Read from a raw CONNECT + TLS handshake through `lmk serve` and `lmk web`."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest
from cryptography.x509.oid import NameOID

from tests.conftest import make_gateway
from tests.e2e.raw_clients import san_names, served_leaf
from tests.harness import Gateway, free_port
from tests.mock_upstream import MockUpstream

CASES = [
    pytest.param("api.openai.com:443", "api.openai.com", id="sni-and-target-agree"),
    pytest.param("127.0.0.1:443", "api.openai.com", id="ip-literal-target"),
    pytest.param("[::1]:443", "api.openai.com", id="ipv6-literal-target"),
    pytest.param("api.anthropic.com:443", "api.openai.com", id="target-names-another-provider"),
    pytest.param("api.openai.com:443", None, id="no-sni"),
]


@pytest.fixture(scope="module")
def web_gateway(tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream) -> Iterator[Gateway]:
    gw = make_gateway(
        tmp_path_factory.mktemp("leafweb"),
        mock,
        command="web",
        proxy_table={"web_port": free_port()},
    )
    gw.start()
    yield gw
    gw.stop()


@pytest.mark.parametrize("command", ["serve", "web"])
@pytest.mark.parametrize(("target", "sni"), CASES)
def test_forged_leaf_names_exactly_the_requested_host(
    request: pytest.FixtureRequest, command: str, target: str, sni: str | None
) -> None:
    gateway: Gateway = request.getfixturevalue("gateway" if command == "serve" else "web_gateway")
    leaf = served_leaf(gateway.port, target, sni)
    issuer = leaf.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert issuer == "LlaMaKey CA"  # forged by the proxy, not tunneled
    expected = sni or target.rpartition(":")[0]
    assert san_names(leaf) == [expected]
    assert not any(
        isinstance(n, ipaddress.IPv4Address | ipaddress.IPv6Address) for n in san_names(leaf)
    )
    assert [a.value for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == [expected]
