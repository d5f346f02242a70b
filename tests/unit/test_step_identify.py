"""Step: identify the provider."""

from __future__ import annotations

import pytest

from llamakey import flowstate as keys
from llamakey.providers import ErrorShape
from llamakey.refusals import Refusal
from llamakey.state import GatewayState
from llamakey.steps.identify import IdentifyProvider
from tests.unit.builders import (
    ALICE_KEY,
    assert_shape,
    body,
    config_data,
    connect_flow,
    make_state,
    mitm_context,
    provider_flow,
)

# IdentifyProvider


async def test_identify_tags_provider_flows(state: GatewayState) -> None:
    addon = IdentifyProvider(state)
    with mitm_context(addon):
        for url, name in [
            ("https://api.openai.com/v1/chat/completions", "openai"),
            ("https://myres.openai.azure.com/openai/deployments/d/chat/completions", "azure"),
            ("https://generativelanguage.googleapis.com/v1beta/models", "gemini"),
        ]:
            f = provider_flow(url)
            addon.requestheaders(f)
            assert f.response is None
            assert f.metadata[keys.PROVIDER] == name


@pytest.mark.parametrize(
    ("host", "sni", "shape"),
    [
        ("api.anthropic.com", "api.openai.com", ErrorShape.OPENAI),
        ("api.openai.com", "api.anthropic.com", ErrorShape.ANTHROPIC),
        ("api.openai.com", "evil.example.net", ErrorShape.OPENAI),
    ],
)
async def test_identify_refuses_host_sni_mismatch(
    state: GatewayState, host: str, sni: str, shape: ErrorShape
) -> None:
    addon = IdentifyProvider(state)
    with mitm_context(addon):
        f = provider_flow(f"https://{host}/v1/messages", {"x-api-key": ALICE_KEY}, sni=sni)
        addon.requestheaders(f)
        assert f.response is not None
        assert f.response.status_code == 421
        assert f.metadata[keys.REFUSED] == Refusal.MISDIRECTED.value
        assert host in assert_shape(shape, body(f), 421)


async def test_identify_refuses_plain_http_to_a_provider(state: GatewayState) -> None:
    addon = IdentifyProvider(state)
    with mitm_context(addon):
        f = provider_flow(
            "http://api.openai.com/v1/models", {"Authorization": f"Bearer {ALICE_KEY}"}, sni=None
        )
        addon.requestheaders(f)
        assert f.response is not None
        assert f.response.status_code == 400
        assert f.metadata[keys.REFUSED] == Refusal.NOT_HTTPS.value
        assert "https://api.openai.com" in body(f)["error"]["message"]


async def test_identify_leaves_other_hosts_alone_in_tunnel_mode(state: GatewayState) -> None:
    addon = IdentifyProvider(state)
    with mitm_context(addon):
        f = provider_flow("https://example.com/", {"Authorization": "Bearer x"})
        addon.requestheaders(f)
        assert f.response is None
        assert keys.PROVIDER not in f.metadata
        c = connect_flow("example.com:443")
        addon.http_connect(c)
        assert c.response is None


async def test_identify_block_mode_refuses_other_hosts() -> None:
    addon = IdentifyProvider(make_state(config_data(other_hosts="block")))
    with mitm_context(addon):
        f = provider_flow("https://example.com/")
        addon.requestheaders(f)
        assert f.response is not None and f.response.status_code == 403
        assert f.metadata[keys.REFUSED] == Refusal.BLOCKED_HOST.value

        c = connect_flow("example.com:443")
        addon.http_connect(c)
        assert c.response is not None and c.response.status_code == 403
        assert b"example.com" in (c.response.content or b"")

        for authority in ("api.openai.com:443", "myres.openai.azure.com:443"):
            c = connect_flow(authority)
            addon.http_connect(c)
            assert c.response is None
            f = provider_flow(f"https://{authority.split(':')[0]}/v1/x")
            addon.requestheaders(f)
            assert f.response is None
