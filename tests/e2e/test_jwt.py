"""JWT identities against a real `lmk web`: tokens signed with test keys, published by a local
JWKS server. Valid RS256 and ES256 tokens pass; every bad one is each SDK's own 401; every
carrier a master key uses carries a JWT too; a JWT identity gets its groups' rules, its own
rate limits and audit rows; a rotated key set is picked up; `lmk sidecar --jwt-command`
gets through as the token's user; a slow JWKS server holds up no other request; and no token
reaches a provider, the audit database, mitmweb, saved flows or the log."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_gateway
from tests.e2e.test_audit import ids, new_row, rows
from tests.e2e.test_secrets import _get, _web
from tests.e2e.test_sidecar import OPENAI_APP, Sidecar
from tests.harness import REAL_KEYS, Gateway, free_port, run_client, wait_until
from tests.jwks_server import (
    AUDIENCE,
    ISSUER,
    JwksServer,
    SigningKey,
    claims,
    hmac_with_public_key,
    tampered,
    unsigned,
)
from tests.mock_upstream import MockUpstream

RSA = SigningKey.rsa("rsa-2026-12")
EC = SigningKey.ec("ec-2026-12")
# Anything shaped like a JWT (kept apart from llamakey.credentials.JWT_PATTERN on purpose).
JWT_SHAPE = re.compile(rb"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
USED: list[str] = []  # every token this module sent: none may show up anywhere


def jwt_toml(jwks: JwksServer, **extra: object) -> str:
    lines = [
        "[jwt]",
        f'issuer = "{ISSUER}"',
        f'audience = ["{AUDIENCE}"]',
        'algorithms = ["RS256", "ES256"]',
        f'jwks_url = "{jwks.url}"',
        'identity_claim = "oid"',
        'groups_claim = "groups"',
        *(f"{k} = {json.dumps(v)}" for k, v in extra.items()),
        "",
        "[groups.research.models]",
        'openai = ["gpt-4o-mini"]',
        "[groups.ops.models]",
        'openai = ["gpt-4o"]',
    ]
    return "\n".join(lines) + "\n"


JWT_USERS = """
[users.carol]
jwt_subject = "oid-carol"
groups = ["research"]

[users.dave]
jwt_subject = "oid-dave"
rate_limits = [{ requests = 1, per = "hour" }]

[users.erin]
jwt_subject = "oid-erin"
disabled = true
"""


def start(tmp: Path, mock: MockUpstream, jwks: JwksServer, **kwargs: object) -> Gateway:
    jwt_extra = kwargs.pop("jwt_extra", {})
    assert isinstance(jwt_extra, dict)
    gw = make_gateway(tmp, mock, extra_toml=jwt_toml(jwks, **jwt_extra), **kwargs)
    with (gw.workdir / "lmk_users.toml").open("a") as users:
        users.write(JWT_USERS)
    gw.start()
    return gw


def sign(key: SigningKey, subject: str = "oid-carol", **changes: object) -> str:
    token = key.sign(claims(subject, **changes))
    USED.append(token)
    return token


def used(token: str) -> str:
    USED.append(token)
    return token


def token_env(gw: Gateway, token: str) -> dict[str, str]:
    """What `lmk env` gives alice, with every key variable set to `token` instead."""
    env = gw.client_env("alice")
    return {k: token if v == gw.keys["alice"] else v for k, v in env.items()}


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    server = JwksServer([RSA, EC]).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def web(
    tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream, jwks: JwksServer
) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("jwt")
    gw = start(
        tmp,
        mock,
        jwks,
        command="web",
        proxy_table={"web_port": free_port()},
        extra_args=("--save", str(tmp / "saved.flows")),
        jwt_extra={"jwks_refresh_seconds": 0},
    )
    yield gw
    gw.stop()


SDKS = """
import json, os, anthropic, openai
hi = [{"role": "user", "content": "hi"}]
out = {}
for name, (token, model) in json.loads(os.environ["CASES"]).items():
    answers = []
    for call in (
        lambda: openai.OpenAI(api_key=token, max_retries=0).chat.completions.create(
            model=model, messages=hi),
        lambda: anthropic.Anthropic(api_key=token, max_retries=0).messages.create(
            model="claude-3-5-haiku-latest", max_tokens=8, messages=hi),
    ):
        try:
            call()
            answers.append("ok")
        except (openai.APIStatusError, anthropic.APIStatusError) as error:
            answers.append(f"{type(error).__module__.split('.')[0]}.{type(error).__name__}")
    out[name] = answers
print(json.dumps(out))
"""
OPENAI_401 = "openai.AuthenticationError"
ANTHROPIC_401 = "anthropic.AuthenticationError"


def test_valid_tokens_pass_and_every_bad_one_is_each_sdks_401(
    web: Gateway, jwks: JwksServer, mock: MockUpstream
) -> None:
    other = SigningKey.rsa("rsa-2026-12")  # the same kid, another key: a forged signature
    cases = {
        "rs256": sign(RSA),
        "es256": sign(EC),
        "expired": sign(RSA, exp=1_700_000_000, iat=1_699_999_000, nbf=1_699_999_000),
        "not_yet_valid": sign(RSA, nbf=4_000_000_000),
        "wrong_issuer": sign(RSA, iss="https://login.example.invalid/other/v2.0"),
        "wrong_audience": sign(RSA, aud="api://someone-else"),
        "wrong_algorithm": used(
            SigningKey(RSA.kid, "PS256", RSA.private).sign(claims("oid-carol"))
        ),
        "alg_none": used(unsigned(claims("oid-carol"))),
        "hs256_with_public_key": used(hmac_with_public_key(RSA, claims("oid-carol"))),
        "tampered": used(tampered(sign(RSA, subject="oid-nobody"), oid="oid-carol")),
        "forged_signature": used(other.sign(claims("oid-carol"))),
        "unknown_kid": used(
            SigningKey("no-such-kid", "RS256", RSA.private).sign(claims("oid-carol"))
        ),
        "unknown_identity": sign(RSA, subject="oid-nobody"),
        "disabled_user": sign(RSA, subject="oid-erin"),
    }
    tokens = {name: (token, "gpt-4o-mini") for name, token in cases.items()}
    tokens["model_not_allowed"] = (sign(RSA), "gpt-4o")  # research's allow-list applies
    tokens["group_from_token"] = (sign(RSA, groups=["ops", "admins"]), "gpt-4o")  # ops allows it
    before = ids(web.audit_db)
    result = run_client(SDKS, {**token_env(web, "unused"), "CASES": json.dumps(tokens)})
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    assert answers.pop("rs256") == ["ok", "ok"]
    assert answers.pop("es256") == ["ok", "ok"]
    assert answers.pop("model_not_allowed") == ["openai.PermissionDeniedError", "ok"]
    assert answers.pop("group_from_token") == ["ok", "ok"]
    assert answers == {name: [OPENAI_401, ANTHROPIC_401] for name in answers}

    recorded = [r for r in rows(web.audit_db) if r["id"] not in before]
    refused = {r["refused_by"] for r in recorded}
    assert {"invalid_jwt", "unknown_jwt_identity", "user_disabled"} <= refused
    passed = [r for r in recorded if r["refused_by"] is None]
    assert len(passed) == 7 and {r["user"] for r in passed} == {"carol"}
    assert (
        sorted(json.loads(r["groups"]) for r in passed)
        == [["research"]] * 5 + [["research", "ops"]] * 2
    )  # "admins" is no group of the config: ignored


def curl(env: dict[str, str], url: str, *args: str, data: str | None = None) -> tuple[int, str]:
    command = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", *args, url]
    if data is not None:
        command += ["-H", "content-type: application/json", "-d", data]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    body, _, code = done.stdout.rpartition("\n")
    return int(code or 0), body + done.stderr


CHAT = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
GEMINI = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent"
GEMINI_BODY = json.dumps({"contents": [{"parts": [{"text": "hi"}]}]})


def test_every_carrier_of_a_master_key_carries_a_jwt(web: Gateway, mock: MockUpstream) -> None:
    token = sign(EC)
    env = token_env(web, token)
    azure = "https://myres.openai.azure.com/openai/deployments/gpt-4o-mini/chat/completions"
    calls = {
        "authorization": (
            "https://api.openai.com/v1/models",
            ["-H", f"Authorization: Bearer {token}"],
            None,
        ),
        "x-api-key": (
            "https://api.anthropic.com/v1/messages",
            ["-H", f"x-api-key: {token}", "-H", "anthropic-version: 2023-06-01"],
            json.dumps({"model": "claude-3-5-haiku-latest", "max_tokens": 8, "messages": []}),
        ),
        "api-key": (f"{azure}?api-version=2024-10-21", ["-H", f"api-key: {token}"], CHAT),
        "x-goog-api-key": (GEMINI, ["-H", f"x-goog-api-key: {token}"], GEMINI_BODY),
        "?key=": (f"{GEMINI}?key={token}", [], GEMINI_BODY),
        "proxy credentials": (
            "https://api.openai.com/v1/models",
            ["-x", f"http://carol:{token}@127.0.0.1:{web.port}"],
            None,
        ),
    }
    for carrier, (url, args, data) in calls.items():
        mock.clear()
        before = ids(web.audit_db)
        status, body = curl(env, url, *args, data=data)
        assert status == 200, (carrier, body)
        assert new_row(web.audit_db, before)["user"] == "carol", carrier
        (seen,) = mock.seen
        provider = {"x-api-key": "anthropic", "api-key": "azure"}.get(carrier, "openai")
        provider = "gemini" if "googleapis" in url else provider
        assert REAL_KEYS[provider] in repr(seen.headers) + seen.path, carrier  # swapped in
    # The same token, wrong, in each carrier: 401 (the proxy credentials name no user then).
    bad = used(tampered(token, oid="oid-dave"))
    for carrier, (url, args, data) in calls.items():
        status, _ = curl(
            env, url.replace(token, bad), *(a.replace(token, bad) for a in args), data=data
        )
        assert status == 401, carrier


def test_a_jwt_identity_has_its_own_rate_limit(web: Gateway) -> None:
    env = token_env(web, sign(RSA, subject="oid-dave"))
    url = "https://api.openai.com/v1/chat/completions"
    first, _ = curl(env, url, *_bearer(env), data=CHAT)
    second, body = curl(env, url, *_bearer(env), data=CHAT)
    assert (first, second) == (200, 429), body
    assert "dave" in body


def _bearer(env: dict[str, str]) -> list[str]:
    return ["-H", f"Authorization: Bearer {env['OPENAI_API_KEY']}"]


def test_an_unknown_kid_refreshes_the_key_set_once_and_a_rotated_set_is_picked_up(
    web: Gateway, jwks: JwksServer
) -> None:
    url = "https://api.openai.com/v1/models"
    ghost = used(SigningKey("ghost", "RS256", RSA.private).sign(claims("oid-carol")))
    env = token_env(web, ghost)
    fetched = jwks.fetches
    assert curl(env, url, *_bearer(env))[0] == 401
    assert jwks.fetches == fetched + 1  # one refresh for the unknown kid, then the 401

    rotated = SigningKey.ec("ec-2027-01")
    old = jwks.keys
    jwks.keys = [rotated]  # the identity provider rolls its keys over
    try:
        env = token_env(web, sign(rotated))
        assert curl(env, url, *_bearer(env))[0] == 200
        env = token_env(web, sign(RSA))  # the retired key's tokens no longer pass
        assert curl(env, url, *_bearer(env))[0] == 401
    finally:
        jwks.keys = old


def test_a_sidecar_with_a_jwt_command_reaches_the_provider_as_the_tokens_user(
    web: Gateway, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(sign(RSA) + "\n")
    car = Sidecar(
        tmp_path / "sidecar", web, "unused", extra_args=("--jwt-command", f"cat {token_file}")
    )
    car.start()
    before = ids(web.audit_db)
    try:
        done = run_client(OPENAI_APP, car.app_env())
    finally:
        car.stop()
    assert done.returncode == 0, done.stderr[-2000:]
    recorded = [r for r in rows(web.audit_db) if r["id"] not in before]
    assert recorded and {(r["user"], r["status"]) for r in recorded} == {("carol", 200)}


def test_no_token_in_the_provider_audit_db_mitmweb_saved_flows_or_log(
    web: Gateway, mock: MockUpstream
) -> None:
    base, web_token = _web(web)
    flows = _get(f"{base}/flows", web_token)
    dump = _get(f"{base}/flows/dump", web_token)
    assert b"jwt... (carol)" in flows  # the marker stands where the token was
    web.stop()
    blobs = {
        "/flows": flows,
        "/flows/dump": dump,
        "saved flows": (web.workdir / "saved.flows").read_bytes(),
        "proxy log": web.log.read_bytes(),
        "audit database": b"".join(p.read_bytes() for p in web.workdir.glob("audit.db*")),
    }
    assert len(USED) >= 20
    for where, blob in blobs.items():
        for token in USED:
            for part in token.split(".")[1:]:
                assert not part or part.encode() not in blob, (where, token[:20])
        assert not JWT_SHAPE.search(blob), where
    for seen in mock.all_seen:
        whole = repr(seen.headers).encode() + seen.path.encode() + seen.body
        assert not JWT_SHAPE.search(whole), f"a JWT reached a provider: {seen.path}"


def test_a_slow_jwks_server_holds_up_no_other_request(tmp_path: Path, mock: MockUpstream) -> None:
    jwks = JwksServer([RSA], gate=threading.Event()).start()
    gw = start(
        tmp_path, mock, jwks, jwt_extra={"jwks_timeout_seconds": 30, "unknown_identity": "ops"}
    )
    try:
        env = token_env(gw, sign(RSA))
        answers: list[int] = []
        waiting = threading.Thread(
            target=lambda: answers.append(
                curl(env, "https://api.openai.com/v1/models", *_bearer(env))[0]
            )
        )
        waiting.start()
        wait_until(lambda: jwks.fetches >= 1, "the proxy fetching the key set")
        # The JWT's request waits for the key set; a master key's goes through meanwhile.
        master = run_client(
            "from openai import OpenAI\nprint(OpenAI(max_retries=0).models.list().data[0].id)",
            gw.client_env("alice"),
        )
        assert master.returncode == 0, master.stderr[-2000:]
        assert waiting.is_alive() and not answers
        assert jwks.gate is not None
        jwks.gate.set()
        waiting.join(30)
        assert answers == [200]

        # An identity no user names gets the default group, its rules and its own audit rows.
        env = token_env(gw, sign(RSA, subject="zoe@example.com"))
        url = "https://api.openai.com/v1/chat/completions"
        before = ids(gw.audit_db)
        assert curl(env, url, *_bearer(env), data=CHAT)[0] == 403  # ops allows gpt-4o only
        chat_4o = CHAT.replace("gpt-4o-mini", "gpt-4o")
        assert curl(env, url, *_bearer(env), data=chat_4o)[0] == 200
        recorded = [r for r in rows(gw.audit_db) if r["id"] not in before]
        assert {(r["user"], r["groups"]) for r in recorded} == {("jwt:zoe@example.com", '["ops"]')}
    finally:
        if jwks.gate is not None:
            jwks.gate.set()
        gw.stop()
        jwks.stop()
