"""No open proxy: off loopback the proxy starts only with `proxy.proxy_auth = true` or
`proxy.other_hosts = "block"`; otherwise `lmk serve`, `lmk web` and `lmk check` refuse in one
line naming both settings, and a hot reload to such a configuration is refused."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_gateway
from tests.e2e.raw_clients import call_openai
from tests.harness import REAL_KEYS, Gateway, run_lmk, wait_until
from tests.mock_upstream import MockUpstream

LOOPBACK = 'listen_host = "127.0.0.1"'


def listen_on(gateway: Gateway, host: str) -> None:
    text = gateway.config.read_text()
    assert LOOPBACK in text
    gateway.config.write_text(text.replace(LOOPBACK, f'listen_host = "{host}"', 1))


def assert_open_proxy_refusal(stderr: str, host: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"lmk: proxy.listen_host = '{host}' is not a loopback address")
    assert "proxy.proxy_auth = true" in lines[0]
    assert 'proxy.other_hosts = "block"' in lines[0]


# An invalid configuration is a failure (1) for every command; a bad `--set` is a usage error (2).
@pytest.mark.parametrize(("command", "status"), [("serve", 1), ("web", 1), ("check", 1)])
def test_open_proxy_configuration_is_refused(
    tmp_path: Path, mock: MockUpstream, command: str, status: int
) -> None:
    gw = make_gateway(tmp_path, mock)
    listen_on(gw, "0.0.0.0")
    result = run_lmk(gw.config, command, env=gw.environment())
    assert result.returncode == status, result.stdout + result.stderr
    assert_open_proxy_refusal(result.stderr, "0.0.0.0")


def test_set_listen_host_off_loopback_is_refused(tmp_path: Path, mock: MockUpstream) -> None:
    gw = make_gateway(tmp_path, mock)
    result = run_lmk(gw.config, "serve", "--set", "listen_host=0.0.0.0", env=gw.environment())
    assert result.returncode == 2, result.stdout + result.stderr
    assert_open_proxy_refusal(result.stderr, "0.0.0.0")


def _proxy_client(gateway: Gateway, credentials: str | None) -> httpx.Client:
    bundle = gateway.workdir / "certs" / "client-bundle.pem"
    auth = f"{credentials}@" if credentials else ""
    return httpx.Client(
        proxy=f"http://{auth}127.0.0.1:{gateway.port}",
        verify=ssl.create_default_context(cafile=str(bundle)),
        timeout=10,
        trust_env=False,
    )


def test_off_loopback_with_proxy_auth_starts_and_requires_a_key(
    tmp_path: Path, mock: MockUpstream
) -> None:
    gw = make_gateway(tmp_path, mock, proxy_table={"proxy_auth": True})
    listen_on(gw, "0.0.0.0")
    gw.start()
    try:
        assert "listening on http://0.0.0.0:" in gw.log.read_text()
        with (
            _proxy_client(gw, None) as anonymous,
            pytest.raises(httpx.ProxyError, match="407"),
        ):
            anonymous.get("https://api.openai.com/v1/models")
        mock.clear()
        with _proxy_client(gw, f"alice:{gw.keys['alice']}") as alice:
            response = alice.get(
                "https://api.openai.com/v1/models", headers={"Authorization": "Bearer x"}
            )
        assert response.status_code == 200, response.text
        assert mock.seen[-1].header("authorization") == f"Bearer {REAL_KEYS['openai']}"
    finally:
        gw.stop()


def test_off_loopback_with_block_starts(tmp_path: Path, mock: MockUpstream) -> None:
    gw = make_gateway(tmp_path, mock, proxy_table={"other_hosts": "block"})
    listen_on(gw, "0.0.0.0")
    gw.start()
    try:
        assert call_openai(gw).status_code == 200
    finally:
        gw.stop()


def test_hot_reload_to_an_open_proxy_is_refused(tmp_path: Path, mock: MockUpstream) -> None:
    gw = make_gateway(tmp_path, mock)
    gw.start()
    try:
        before = gw.config.stat().st_mtime_ns
        listen_on(gw, "0.0.0.0")
        os.utime(gw.config, ns=(before + 10**9, before + 10**9))  # seen even within a tick
        wait_until(lambda: "Configuration not reloaded" in gw.log.read_text(), "the refused reload")
        assert "proxy.listen_host = '0.0.0.0' is not a loopback address" in gw.log.read_text()
        assert call_openai(gw).status_code == 200  # still serving on the old configuration
    finally:
        gw.stop()
