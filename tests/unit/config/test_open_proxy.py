"""No open proxy: off loopback, the configuration needs `proxy_auth = true` or
`other_hosts = "block"`."""

from __future__ import annotations

import pytest

from llamakey import config
from llamakey.config.schema import is_loopback_host
from tests.unit.builders import config_data
from tests.unit.config.helpers import config_error


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "::ffff:127.0.0.1"]
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "", "::", "10.0.0.5", "192.168.1.2", "gw.lan", "localhost.evil"]
)
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback_host(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "::", "gw.lan"])
def test_open_proxy_off_loopback_is_refused_in_one_line_naming_both_settings(host: str) -> None:
    message = config_error(config_data(listen_host=host))
    assert "\n" not in message
    assert message.startswith(f"proxy.listen_host = {host!r} is not a loopback address")
    assert "proxy.proxy_auth = true" in message
    assert 'proxy.other_hosts = "block"' in message


@pytest.mark.parametrize("guard", [{"proxy_auth": True}, {"other_hosts": "block"}])
def test_off_loopback_with_auth_or_block_is_accepted(guard: dict[str, object]) -> None:
    settings = config.resolve(config.parse(config_data(listen_host="0.0.0.0", **guard)), None)
    assert settings.file.proxy.listen_host == "0.0.0.0"
