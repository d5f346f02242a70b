"""Step: authenticate a bearer JWT, in every carrier a master key uses, with the token replaced
by its marker before anything (mitmweb's View, a wait for the key set) sees the flow."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llamakey import config, credentials
from llamakey import flowstate as keys
from llamakey.refusals import Refusal
from llamakey.state import GatewayState
from llamakey.steps.authenticate import Authenticate
from llamakey.steps.identify import IdentifyProvider
from tests.jwks_server import AUDIENCE, ISSUER, JwksServer, SigningKey, claims
from tests.unit.builders import (
    ALICE_KEY,
    basic,
    config_data,
    connect_flow,
    fill,
    mitm_context,
    provider_flow,
    request_text,
)
from tests.unit.test_step_authenticate import CARRIER_CASES

EC = SigningKey.ec("ec-unit")


def jwt_state(tmp_path: Path, proxy_auth: bool = False, **jwt: Any) -> GatewayState:
    (tmp_path / "idp.pem").write_bytes(EC.public_pem())
    data = config_data(proxy_auth=proxy_auth)
    data["jwt"] = {
        "issuer": ISSUER,
        "audience": [AUDIENCE],
        "algorithms": ["ES256"],
        "identity_claim": "oid",
        **(jwt or {"public_key_file": "idp.pem"}),
    }
    data["users"]["erin"] = {"jwt_subject": "oid-erin", "groups": ["ops"]}
    state = GatewayState()
    state.install(config.resolve(config.parse(data), tmp_path / "lmk_config.toml"))
    return state


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    server = JwksServer([EC], gate=threading.Event()).start()
    yield server
    assert server.gate is not None
    server.gate.set()
    server.stop()


@pytest.mark.parametrize(("url", "headers"), [c for c in CARRIER_CASES if c.id != "hf-prefixed"])
async def test_a_jwt_in_each_carrier_names_its_user(
    tmp_path: Path, url: str, headers: dict[str, str]
) -> None:
    state = jwt_state(tmp_path)
    token = EC.sign(claims("oid-erin"))
    auth = Authenticate(state)
    with mitm_context(auth):
        f = provider_flow(*fill(url, headers, token))
        IdentifyProvider(state).requestheaders(f)
        assert auth.requestheaders(f) is None  # a key at hand: no wait
        assert f.response is None and f.metadata[keys.USER] == "erin"
        assert state.flows(f).marker == "jwt... (erin)"
        ((_, value),) = credentials.presented(f.request)
        assert value == "jwt... (erin)"
        for part in token.split("."):
            assert part not in request_text(f)


async def test_while_the_key_set_is_fetched_the_flow_holds_only_the_marker(
    tmp_path: Path, jwks: JwksServer
) -> None:
    state = jwt_state(tmp_path, jwks_url=jwks.url)
    token = EC.sign(claims("oid-erin"))
    auth = Authenticate(state)
    with mitm_context(auth):
        f = provider_flow("https://api.openai.com/v1/models", {"Authorization": f"Bearer {token}"})
        IdentifyProvider(state).requestheaders(f)
        pending = auth.requestheaders(f)
        assert pending is not None
        assert token.split(".")[2] not in request_text(f)
        assert f.request.headers["authorization"] == "Bearer jwt... (unknown)"
        assert jwks.gate is not None
        jwks.gate.set()
        await pending
        assert f.metadata[keys.USER] == "erin"
        assert f.request.headers["authorization"] == "Bearer jwt... (erin)"


async def test_a_tunnel_proven_by_a_jwt_checks_it_again_on_each_request(tmp_path: Path) -> None:
    state = jwt_state(tmp_path)
    auth = Authenticate(state)
    with mitm_context(auth):
        good = EC.sign(claims("oid-erin"))
        connect = connect_flow("api.openai.com:443", {"Proxy-Authorization": basic("erin", good)})
        assert auth.http_connect(connect) is None and connect.response is None
        f = provider_flow("https://api.openai.com/v1/models", client=connect.client_conn)
        IdentifyProvider(state).requestheaders(f)
        auth.requestheaders(f)
        assert f.metadata[keys.USER] == "erin"

        expiring = EC.sign(claims("oid-erin", exp=1_000_000))
        connect = connect_flow(
            "api.openai.com:443", {"Proxy-Authorization": basic("erin", expiring)}
        )
        auth.http_connect(connect)  # proxy_auth is off: not refused, and proves no one
        f = provider_flow("https://api.openai.com/v1/models", client=connect.client_conn)
        IdentifyProvider(state).requestheaders(f)
        auth.requestheaders(f)
        assert f.response is not None and f.response.status_code == 401
        assert f.metadata[keys.REFUSED] == Refusal.NO_KEY.value


async def test_master_keys_work_beside_jwts_and_without_jwt_a_token_is_a_wrong_key(
    tmp_path: Path,
) -> None:
    state = jwt_state(tmp_path)
    auth = Authenticate(state)
    with mitm_context(auth):
        f = provider_flow(
            "https://api.openai.com/v1/models", {"Authorization": f"Bearer {ALICE_KEY}"}
        )
        IdentifyProvider(state).requestheaders(f)
        auth.requestheaders(f)
        assert f.metadata[keys.USER] == "alice"
    plain = GatewayState()
    plain.install(config.resolve(config.parse(config_data()), None))
    auth = Authenticate(plain)
    token = EC.sign(claims("oid-erin"))
    with mitm_context(auth):
        f = provider_flow("https://api.openai.com/v1/models", {"Authorization": f"Bearer {token}"})
        IdentifyProvider(plain).requestheaders(f)
        auth.requestheaders(f)
        assert f.response is not None and f.response.status_code == 401
        assert f.metadata[keys.REFUSED] == Refusal.UNKNOWN_KEY.value


async def test_proxy_auth_takes_a_jwt_as_proxy_credentials(
    tmp_path: Path, jwks: JwksServer
) -> None:
    state = jwt_state(tmp_path, proxy_auth=True, jwks_url=jwks.url)
    auth = Authenticate(state)
    with mitm_context(auth):
        good = connect_flow(
            "api.openai.com:443",
            {"Proxy-Authorization": basic("erin", EC.sign(claims("oid-erin")))},
        )
        pending = auth.http_connect(good)  # the key set is not there yet: the CONNECT waits
        assert pending is not None and "proxy-authorization" not in good.request.headers
        assert jwks.gate is not None
        jwks.gate.set()
        await pending
        assert good.response is None

        for token, why in (
            (EC.sign(claims("oid-erin", exp=1_000_000)), "expired"),
            (EC.sign(claims("oid-nobody")), "names no user"),
        ):
            bad = connect_flow("api.openai.com:443", {"Proxy-Authorization": basic("erin", token)})
            assert auth.http_connect(bad) is None  # the keys are cached now
            assert bad.response is not None and bad.response.status_code == 407
            assert why in (bad.response.text or "")
            assert token.split(".")[2] not in (bad.response.text or "")
