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
    ("host", "sni", "connect", "shape"),
    [
        ("api.anthropic.com", "api.openai.com", "api.openai.com", ErrorShape.OPENAI),
        ("api.openai.com", "api.anthropic.com", "api.anthropic.com", ErrorShape.ANTHROPIC),
        # Only provider tunnels are intercepted: here the CONNECT named openai.
        ("api.openai.com", "evil.example.net", "api.openai.com", ErrorShape.OPENAI),
    ],
)
async def test_identify_refuses_host_sni_mismatch(
    state: GatewayState, host: str, sni: str, connect: str, shape: ErrorShape
) -> None:
    addon = IdentifyProvider(state)
    with mitm_context(addon):
        f = provider_flow(
            f"https://{host}/v1/messages", {"x-api-key": ALICE_KEY}, sni=sni, connect=(connect, 443)
        )
        addon.requestheaders(f)
        assert f.response is not None
        assert f.response.status_code == 421
        assert f.metadata[keys.REFUSED] == Refusal.MISDIRECTED.value
        assert host in assert_shape(shape, body(f), 421)


@pytest.mark.parametrize(
    ("connect", "url", "host_header", "sni"),
    [
        # No TLS server name: the Host header alone must not pick the key.
        (("api.groq.com", 443), "https://api.openai.com/v1/chat/completions", None, None),
        # A tenant-creatable name under a provider's wildcard, Host naming another provider.
        (
            ("mallory.endpoints.huggingface.cloud", 443),
            "https://api.anthropic.com/v1/messages",
            None,
            None,
        ),
        # No SNI and a Host that is no provider at all, inside a provider's tunnel.
        (("api.openai.com", 443), "https://evil.example/v1/models", None, None),
        # An absolute-form target (or h2 :authority) naming another host than Host and SNI.
        (
            ("api.openai.com", 443),
            "https://api.anthropic.com/v1/messages",
            "api.openai.com",
            "api.openai.com",
        ),
        # The same host on another port.
        (("api.openai.com", 443), "https://api.openai.com:8443/v1/models", None, "api.openai.com"),
        # Case and a trailing dot do not make a name differ, but the CONNECT target decides.
        (("api.openai.com", 443), "https://API.OPENAI.COM./v1/models", None, "api.groq.com"),
    ],
)
async def test_every_name_a_request_carries_must_be_its_connections_host(
    state: GatewayState,
    connect: tuple[str, int],
    url: str,
    host_header: str | None,
    sni: str | None,
) -> None:
    addon = IdentifyProvider(state)
    with mitm_context(addon):
        f = provider_flow(url, {"authorization": f"Bearer {ALICE_KEY}"}, sni=sni, connect=connect)
        if host_header is not None:
            f.request.host_header = host_header
        addon.requestheaders(f)
        assert f.response is not None and f.response.status_code == 421
        assert f.metadata[keys.REFUSED] == Refusal.MISDIRECTED.value
        # The refusal belongs to the provider of the connection: it is audited as such.
        assert state.flows(f).provider == state.settings.index.lookup(connect[0]).name  # type: ignore[union-attr]


async def test_case_and_trailing_dot_name_the_same_host(state: GatewayState) -> None:
    addon = IdentifyProvider(state)
    with mitm_context(addon):
        f = provider_flow("https://API.OpenAI.com./v1/models", connect=("api.openai.com", 443))
        addon.requestheaders(f)
        assert f.response is None
        assert state.flows(f).provider == "openai"


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


@pytest.mark.parametrize(
    "authority", ["api.anthropic.com", "api.openai.com:8443", "evil.example:443"]
)
async def test_an_authority_naming_another_host_is_misdirected(
    state: GatewayState, authority: str
) -> None:
    """Inside a tunnel mitmproxy sets `request.host` to the CONNECT target; the name of an
    absolute-form target or an HTTP/2 `:authority` survives only in `request.authority`."""
    addon = IdentifyProvider(state)
    with mitm_context(addon):
        f = provider_flow("https://api.openai.com/v1/models")
        f.request.authority = authority
        addon.requestheaders(f)
        assert f.response is not None and f.response.status_code == 421
        assert authority.partition(":")[0] in (f.response.text or "")
