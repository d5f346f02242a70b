"""Forged leaves carry exactly one DNS name: the TLS server name, or without one the CONNECT
target's host name; never an IP address, never a second name."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from mitmproxy.addons import tlsconfig
from mitmproxy.proxy import context
from mitmproxy.test import tflow

from llamakey.leafcert import NO_NAME, ExactLeafNames, LeafTlsConfig, leaf_name
from tests.unit.builders import mitm_context


def conn_context(sni: str | None, address: tuple[str, int] | None) -> context.Context:
    client = tflow.tclient_conn()
    client.sni = sni
    client.sockname = ("127.0.0.1", 8080)
    ctx = context.Context(client, None)  # type: ignore[arg-type]
    ctx.server.address = address
    return ctx


@pytest.mark.parametrize(
    ("sni", "address", "expected"),
    [
        ("api.openai.com", ("api.openai.com", 443), "api.openai.com"),
        ("api.openai.com", ("127.0.0.1", 443), "api.openai.com"),  # IP-literal CONNECT target
        ("api.openai.com", ("api.anthropic.com", 443), "api.openai.com"),  # another provider
        (None, ("api.openai.com", 443), "api.openai.com"),  # no SNI: the CONNECT target
        (None, ("127.0.0.1", 443), NO_NAME),  # neither: no IP, a name nobody accepts
        ("10.0.0.1", ("api.openai.com", 443), NO_NAME),  # an IP as SNI is no name either
        (None, ("::1", 443), NO_NAME),
        ("api.openai.com.", None, "api.openai.com"),
    ],
)
def test_leaf_name(sni: str | None, address: tuple[str, int] | None, expected: str) -> None:
    assert leaf_name(conn_context(sni, address)) == expected


def _names(cert: x509.GeneralNames) -> list[object]:
    return [name.value for name in cert]


async def test_leaf_tls_config_forges_exactly_one_name(tmp_path: Path) -> None:
    tls = LeafTlsConfig()
    with mitm_context(tls) as tctx:
        tctx.configure(tls, confdir=str(tmp_path), upstream_cert=True)
        assert tctx.master.addons.get("tlsconfig") is tls
        entry = tls.get_cert(conn_context("api.openai.com", ("1.2.3.4", 443)))
        assert _names(entry.cert.altnames) == ["api.openai.com"]
        assert entry.cert.cn == "api.openai.com"


async def test_entry_script_patches_mitmproxys_own_tls_config(tmp_path: Path) -> None:
    tls = tlsconfig.TlsConfig()
    with mitm_context(tls, ExactLeafNames()) as tctx:
        tctx.configure(tls, confdir=str(tmp_path))
        stock = conn_context(None, ("api.openai.com", 443))
        entry = tls.get_cert(stock)
        assert _names(entry.cert.altnames) == ["api.openai.com"]  # stock adds 127.0.0.1
