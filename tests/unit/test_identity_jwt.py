"""JWT identities (`identity/jwt.py`) against a local JWKS server: what is checked, the key set's
cache, its refresh on an unknown kid (once, rate-limited, shared), rotation, a static PEM key,
identities no user names, groups from the token; and the `[jwt]` table's refusals."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from llamakey import config
from llamakey.identity import JwtIdentities, Outcome
from llamakey.refusals import Refusal
from tests.harness import wait_until
from tests.jwks_server import AUDIENCE, ISSUER, JwksServer, SigningKey, claims, tampered

RSA = SigningKey.rsa("rsa-1")
EC = SigningKey.ec("ec-1")


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    server = JwksServer([RSA, EC]).start()
    yield server
    server.stop()


def jwt_table(**changes: Any) -> dict[str, Any]:
    return {
        "issuer": ISSUER,
        "audience": [AUDIENCE],
        "algorithms": ["RS256", "ES256"],
        "identity_claim": "oid",
        "groups_claim": "groups",
        **changes,
    }


def identities(
    tmp_path: Path, before: JwtIdentities | None = None, **changes: Any
) -> JwtIdentities:
    data = {"jwt": jwt_table(**changes), "groups": {"research": {}, "ops": {}}}
    users = config.parse_users(
        {
            "users": {
                "carol": {"jwt_subject": "oid-carol", "groups": ["research"]},
                "dave": {"jwt_subject": "oid-dave", "disabled": True},
            }
        }
    )
    settings = config.resolve(config.parse(data), tmp_path / "lmk_config.toml", users)
    found = JwtIdentities.of(settings, before)
    assert found is not None
    return found


def check(ids: JwtIdentities, token: str) -> Outcome:
    found = ids.check(token)
    return found if found is not None else asyncio.run(ids.check_after_fetch(token))


def test_valid_rs256_and_es256_tokens_name_their_user(tmp_path: Path, jwks: JwksServer) -> None:
    ids = identities(tmp_path, jwks_url=jwks.url)
    for key in (RSA, EC):
        found = check(ids, key.sign(claims("oid-carol")))
        assert found.user is not None and found.user.name == "carol", found
        assert found.user.groups == ("research",) and found.policy is None
    assert jwks.fetches == 1  # the set is cached


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (RSA.sign(claims("oid-carol", exp=1_000_000)), "expired"),
        (RSA.sign(claims("oid-carol", nbf=4_000_000_000)), "not valid yet"),
        (RSA.sign(claims("oid-carol", iat=4_000_000_000)), "not valid yet"),
        (RSA.sign(claims("oid-carol", exp="soon")), "malformed"),
        (tampered(RSA.sign(claims("oid-dave")), oid="oid-carol"), "signature does not verify"),
        (RSA.sign(claims("oid-carol", iss="https://evil.example/")), "issuer"),
        (RSA.sign(claims("oid-carol", aud="api://other")), "audience"),
        (RSA.sign(claims("oid-carol", exp=None)), "'exp'"),
        (RSA.sign(claims("oid-carol", oid=None)), "'oid'"),
        (SigningKey("rsa-1", "RS384", RSA.private).sign(claims("oid-carol")), "accepts only"),
        (SigningKey("rsa-1", "ES256", EC.private).sign(claims("oid-carol")), "not its key's"),
        (SigningKey("ghost", "RS256", RSA.private).sign(claims("oid-carol")), "kid"),
    ],
    ids=[
        "expired",
        "nbf",
        "iat",
        "exp-text",
        "tampered",
        "issuer",
        "audience",
        "no-exp",
        "no-oid",
        "rs384",
        "alg-swap",
        "kid",
    ],
)
def test_a_bad_token_is_refused(tmp_path: Path, jwks: JwksServer, token: str, why: str) -> None:
    found = check(identities(tmp_path, jwks_url=jwks.url), token)
    assert found.user is None and found.refusal is Refusal.INVALID_JWT
    assert why in found.message


def test_the_leeway_forgives_a_little_clock_skew(tmp_path: Path, jwks: JwksServer) -> None:
    ids = identities(tmp_path, jwks_url=jwks.url, leeway_seconds=30)
    soon = int(time.time()) + 10
    assert check(ids, RSA.sign(claims("oid-carol", nbf=soon, iat=soon))).user is not None
    assert check(ids, RSA.sign(claims("oid-carol", exp=int(time.time()) - 10))).user is not None
    late = int(time.time()) - 60
    assert check(ids, RSA.sign(claims("oid-carol", exp=late))).refusal is Refusal.INVALID_JWT


def test_unknown_kids_fetch_the_set_at_most_once_per_interval(
    tmp_path: Path, jwks: JwksServer
) -> None:
    ids = identities(tmp_path, jwks_url=jwks.url, jwks_refresh_seconds=60)

    async def many() -> list[Outcome]:
        tokens = [
            SigningKey(uuid.uuid4().hex, "RS256", RSA.private).sign(claims("oid-carol"))
            for _ in range(20)
        ]
        out = []
        for token in tokens:
            found = ids.check(token)
            out.append(found if found is not None else await ids.check_after_fetch(token))
        return out

    outcomes = asyncio.run(many())
    assert {o.refusal for o in outcomes} == {Refusal.INVALID_JWT}
    assert jwks.fetches == 1  # the first fetch; no kid got another one within the interval


def test_waiting_tokens_share_one_fetch(tmp_path: Path, jwks: JwksServer) -> None:
    jwks.gate = threading.Event()  # the identity provider answers when the test says
    ids = identities(tmp_path, jwks_url=jwks.url)

    async def together() -> list[Outcome]:
        tokens = [RSA.sign(claims("oid-carol")) for _ in range(10)]
        assert all(ids.check(t) is None for t in tokens)
        waiting = asyncio.gather(*(ids.check_after_fetch(t) for t in tokens))
        await asyncio.to_thread(wait_until, lambda: jwks.fetches >= 1, "the JWKS fetch")
        assert all(ids.check(t) is None for t in tokens)  # still waiting for the same fetch
        assert jwks.gate is not None
        jwks.gate.set()
        return await waiting

    assert all(o.user is not None for o in asyncio.run(together()))
    assert jwks.fetches == 1


def test_a_rotated_key_set_is_picked_up_and_a_reload_keeps_the_cache(
    tmp_path: Path, jwks: JwksServer
) -> None:
    ids = identities(tmp_path, jwks_url=jwks.url, jwks_refresh_seconds=0)
    assert check(ids, RSA.sign(claims("oid-carol"))).user is not None
    rotated = SigningKey.rsa("rsa-2")
    jwks.keys = [rotated]
    assert check(ids, rotated.sign(claims("oid-carol"))).user is not None
    assert jwks.fetches == 2
    reloaded = identities(tmp_path, ids, jwks_url=jwks.url, jwks_refresh_seconds=0)
    assert check(reloaded, rotated.sign(claims("oid-carol"))).user is not None
    assert jwks.fetches == 2  # same URL: the reload kept the keys


def test_an_https_key_set_needs_its_ca_and_ignores_proxy_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "idp-ca.pem"))
    server = JwksServer([RSA], tls=ca).start()
    # A proxy that is not there: the fetch must go direct.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    try:
        token = RSA.sign(claims("oid-carol"))
        untrusted = identities(tmp_path, jwks_url=server.url)
        assert check(untrusted, token).refusal is Refusal.JWKS_UNAVAILABLE
        trusted = identities(tmp_path, jwks_url=server.url, jwks_ca="idp-ca.pem")
        assert check(trusted, token).user is not None
    finally:
        server.stop()


def test_an_unreachable_key_set_is_a_503_refusal(tmp_path: Path, jwks: JwksServer) -> None:
    url = jwks.url
    jwks.stop()
    ids = identities(tmp_path, jwks_url=url, jwks_timeout_seconds=2)
    found = check(ids, RSA.sign(claims("oid-carol")))
    assert found.refusal is Refusal.JWKS_UNAVAILABLE


def test_a_static_pem_key(tmp_path: Path) -> None:
    (tmp_path / "idp.pem").write_bytes(EC.public_pem())
    ids = identities(tmp_path, public_key_file="idp.pem")
    assert check(ids, EC.sign(claims("oid-carol"))).user is not None
    assert check(ids, RSA.sign(claims("oid-carol"))).refusal is Refusal.INVALID_JWT


def test_identities_no_user_names_are_refused_or_get_the_default_group(
    tmp_path: Path, jwks: JwksServer
) -> None:
    token = RSA.sign(claims("erin@example.com", groups=["ops", "not-a-group"]))
    assert check(identities(tmp_path, jwks_url=jwks.url), token).refusal is (
        Refusal.UNKNOWN_IDENTITY
    )
    found = check(identities(tmp_path, jwks_url=jwks.url, unknown_identity="research"), token)
    assert found.user is not None and found.user.name == "jwt:erin@example.com"
    assert found.user.groups == ("research", "ops")  # undefined groups are ignored
    assert found.policy is not None
    odd = RSA.sign(claims("erin:x"))
    assert check(identities(tmp_path, jwks_url=jwks.url, unknown_identity="research"), odd).refusal


def test_groups_from_the_token_add_to_the_users_own(tmp_path: Path, jwks: JwksServer) -> None:
    found = check(
        identities(tmp_path, jwks_url=jwks.url), RSA.sign(claims("oid-carol", groups=["ops"]))
    )
    assert found.user is not None and found.user.groups == ("research", "ops")
    assert found.policy is not None


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"algorithms": ["none"]}, "'none' is never accepted"),
        ({"algorithms": ["HS256"]}, "HMAC algorithm"),
        ({"algorithms": []}, "jwt.algorithms"),
        ({"public_key_file": "k.pem", "jwks_url": "https://idp.example/keys"}, "exactly one"),
        ({}, "exactly one"),
        ({"jwks_url": "ftp://idp.example/keys"}, "https://"),
        ({"jwks_url": "https://idp.example/keys", "unknown_identity": "nope"}, "unknown_identity"),
        ({"jwks_url": "https://idp.example/keys", "audience": "api://x"}, "jwt.audience"),
    ],
)
def test_the_jwt_table_refuses(tmp_path: Path, changes: dict[str, Any], expected: str) -> None:
    data = {"jwt": jwt_table(**changes), "groups": {"research": {}}}
    with pytest.raises(config.ConfigError) as error:
        config.resolve(config.parse(data), tmp_path / "lmk_config.toml")
    assert expected in str(error.value)


def test_a_user_needs_a_key_or_a_jwt_subject_and_each_is_one_users(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="expected key_sha256"):
        config.parse_users({"users": {"carol": {"groups": []}}})
    users = config.parse_users(
        {"users": {"carol": {"jwt_subject": "x"}, "dave": {"jwt_subject": "x"}}}
    )
    with pytest.raises(config.ConfigError, match=r"same JWT identity as users\.carol"):
        config.resolve(config.parse({}), tmp_path / "lmk_config.toml", users)


def test_a_remembered_token_still_expires_and_dies_with_its_key(
    tmp_path: Path, jwks: JwksServer
) -> None:
    ids = identities(tmp_path, jwks_url=jwks.url, jwks_refresh_seconds=0, leeway_seconds=0)
    brief = RSA.sign(claims("oid-carol", exp=int(time.time()) + 2))
    assert check(ids, brief).user is not None
    assert check(ids, brief).user is not None  # remembered
    wait_until(lambda: check(ids, brief).refusal is Refusal.INVALID_JWT, "the token's expiry")

    token = RSA.sign(claims("oid-carol", jti="kept"))
    assert check(ids, token).user is not None
    jwks.keys = [EC]  # the identity provider withdraws the RSA key
    ghost = SigningKey("ghost", "RS256", RSA.private).sign(claims("oid-carol"))
    assert check(ids, ghost).refusal is Refusal.INVALID_JWT  # the set is fetched again
    found = check(ids, token)
    assert found.refusal is Refusal.INVALID_JWT and "kid" in found.message
