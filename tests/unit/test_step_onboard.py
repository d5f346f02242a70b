"""Step: onboarding at http://lmk.invalid/, answered by the proxy itself."""

from __future__ import annotations

import shlex
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy.proxy.layers.http import _hooks as http_hooks
from mitmproxy.test import tflow

from llamakey import ca, config
from llamakey import flowstate as keys
from llamakey.clientenv import KEY_PLACEHOLDER, USER_HEADER
from llamakey.gateway import gateway_addons
from llamakey.refusals import Refusal
from llamakey.state import GatewayState
from llamakey.steps.audit import AuditLog
from llamakey.steps.identify import IdentifyProvider
from llamakey.steps.onboard import Onboard
from tests.harness import wait_until
from tests.unit.builders import (
    ALICE_KEY,
    BOB_KEY,
    CAROL_KEY,
    STRANGER_KEY,
    basic,
    config_data,
    connect_flow,
    mitm_context,
    provider_flow,
    request,
    request_text,
)

MEMBER_DIR = "/home/alice/.config/llamakey"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA made as `lmk ca init` makes it (once: an RSA key takes a moment)."""
    directory = tmp_path_factory.mktemp("onboard") / "certs"
    ca.init_ca(directory, ["api.openai.com"])
    return directory


def onboard_state(certs: Path, tmp_path: Path | None = None, **proxy: Any) -> GatewayState:
    data = config_data(certs_dir=str(certs), **proxy)
    if tmp_path is not None:
        data["audit"] = {"path": str(tmp_path / "audit.db")}
    state = GatewayState()
    state.install(config.resolve(config.parse(data), None))
    return state


@pytest.fixture
def state(certs: Path) -> GatewayState:
    return onboard_state(certs)


def onboarding_flow(
    target: str,
    headers: Mapping[str, str] | None = None,
    *,
    method: str = "GET",
    sockname: tuple[str, int] = ("127.0.0.1", 8080),
) -> http.HTTPFlow:
    """A plain-HTTP proxy request (``GET http://lmk.invalid/... HTTP/1.1``): no tunnel."""
    f = tflow.tflow(req=request(f"http://lmk.invalid{target}", headers, b"", method))
    f.server_conn.address = None
    f.client_conn.sockname = sockname
    f.client_conn.peername = ("10.1.2.3", 50000)
    return f


def text(f: http.HTTPFlow) -> str:
    assert f.response is not None
    return f.response.get_text() or ""


def exports(body: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in body.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        (env[name],) = shlex.split(value)
    return env


async def ask(addon: Onboard, f: http.HTTPFlow) -> http.HTTPFlow:
    with mitm_context(addon):
        pending = addon.requestheaders(f)
        if pending is not None:  # only onboarding requests are answered asynchronously
            await pending
    return f


# --------------------------------------------------------------------------------------------
# The CA: public


async def test_the_ca_and_its_fingerprint_need_no_key(state: GatewayState, certs: Path) -> None:
    addon = Onboard(state)
    pem = await ask(addon, onboarding_flow("/ca.pem"))
    assert pem.response is not None and pem.response.status_code == 200
    assert pem.response.headers["content-type"] == "application/x-pem-file"
    assert pem.response.content == ca.ca_certificate_pem(certs)
    assert pem.response.content == (certs / ca.CA_CERT_FILE).read_bytes()

    shown = await ask(addon, onboarding_flow("/fingerprint"))
    expected = ca.fingerprint(ca.load_ca_certificate(ca.ca_certificate_pem(certs)))
    assert text(shown) == expected + "\n"
    assert len(expected) == 95 and expected.count(":") == 31


async def test_the_ca_is_read_once_per_configuration(certs: Path, tmp_path: Path) -> None:
    own = tmp_path / "certs"
    ca.init_ca(own, ["api.openai.com"])
    state = onboard_state(own)
    addon = Onboard(state)
    first = await ask(addon, onboarding_flow("/ca.pem"))
    for name in (ca.CA_KEY_FILE, ca.CA_CERT_FILE):
        (own / name).unlink()
    again = await ask(addon, onboarding_flow("/ca.pem"))  # served from what was read
    assert again.response is not None and first.response is not None
    assert again.response.content == first.response.content
    # A new configuration reads it anew: with the CA gone, that fails closed.
    state.install(config.resolve(config.parse(config_data(certs_dir=str(own))), None))
    gone = await ask(addon, onboarding_flow("/ca.pem"))
    assert gone.response is not None and gone.response.status_code == 500
    assert b"BEGIN CERTIFICATE" not in (gone.response.content or b"")


async def test_the_index_says_what_is_there(state: GatewayState) -> None:
    f = await ask(Onboard(state), onboarding_flow("/"))
    body = text(f)
    for path in ("/ca.pem", "/fingerprint", "/env"):
        assert f"http://lmk.invalid{path}" in body
    assert "lmk env --proxy" in body


@pytest.mark.parametrize(
    ("target", "method", "status"),
    [
        ("/nothing", "GET", 404),
        (f"/{STRANGER_KEY}", "GET", 404),
        ("/ca.pem", "POST", 405),
        ("/env", "DELETE", 405),
    ],
)
async def test_anything_else_is_answered_too(
    state: GatewayState, target: str, method: str, status: int
) -> None:
    f = await ask(Onboard(state), onboarding_flow(target, method=method))
    assert f.response is not None and f.response.status_code == status
    assert target not in text(f)  # nothing of the request is echoed


# --------------------------------------------------------------------------------------------
# The environment: for a master key that may be used now


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {ALICE_KEY}"},
        {"Authorization": f"Bearer hf_{ALICE_KEY}"},  # as copied from HF_TOKEN
        {"Proxy-Authorization": basic("alice", ALICE_KEY)},
    ],
    ids=["bearer", "hf-bearer", "proxy-credentials"],
)
async def test_the_environment_of_a_member(
    state: GatewayState, headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    f = await ask(Onboard(state), onboarding_flow(f"/env?dir={MEMBER_DIR}", headers))
    assert f.response is not None and f.response.status_code == 200, text(f)
    assert f.response.headers[USER_HEADER] == "alice"
    assert f.response.headers["cache-control"] == "no-store"
    env = exports(text(f))
    assert env["HTTPS_PROXY"] == env["https_proxy"] == "http://127.0.0.1:8080"
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "AWS_CA_BUNDLE"):
        assert env[name] == f"{MEMBER_DIR}/{ca.BUNDLE_FILE}"
    assert env["NODE_EXTRA_CA_CERTS"] == f"{MEMBER_DIR}/{ca.CA_CERT_FILE}"
    assert env["OPENAI_API_KEY"] == env["ANTHROPIC_API_KEY"] == KEY_PLACEHOLDER
    assert env["HF_TOKEN"] == "hf_" + KEY_PLACEHOLDER
    # The key is in no part of the flow: not in the answer, and a marker in the request.
    shown = request_text(f) + text(f) + str(f.response.headers)
    assert ALICE_KEY not in shown and ALICE_KEY[4:] not in shown
    assert "proxy-authorization" not in f.request.headers
    if "Authorization" in headers:
        assert f.request.headers["authorization"] == f"Bearer lmk_...{ALICE_KEY[-4:]} (alice)"
    assert f.metadata[keys.USER] == "alice"
    assert "the environment of alice went to 10.1.2.3" in caplog.text
    assert ALICE_KEY not in caplog.text


async def test_with_proxy_auth_the_proxy_url_carries_the_credentials(certs: Path) -> None:
    state = onboard_state(certs, proxy_auth=True)
    headers = {"Authorization": f"Bearer {ALICE_KEY}"}
    f = await ask(Onboard(state), onboarding_flow(f"/env?dir={MEMBER_DIR}", headers))
    env = exports(text(f))
    assert env["HTTPS_PROXY"] == f"http://alice:{KEY_PLACEHOLDER}@127.0.0.1:8080"


@pytest.mark.parametrize(
    ("sockname", "query", "proxy"),
    [
        (("10.0.0.5", 3128), "", "10.0.0.5:3128"),
        (("fd00::5", 8080, 0, 0), "", "[fd00::5]:8080"),
        (("::ffff:10.0.0.5", 8080, 0, 0), "", "10.0.0.5:8080"),
        (("", 0), "", "127.0.0.1:8080"),  # no socket address known: the listen address
        (("10.0.0.5", 8080), "&proxy=gw.example:9999", "gw.example:9999"),
        (("10.0.0.5", 8080), "&proxy=%5Bfd00::5%5D:8080", "[fd00::5]:8080"),
    ],
)
async def test_the_proxy_address_is_the_one_the_member_reached(
    state: GatewayState, sockname: tuple[str, int], query: str, proxy: str
) -> None:
    f = onboarding_flow(
        f"/env?dir={MEMBER_DIR}{query}", {"Authorization": f"Bearer {ALICE_KEY}"}, sockname=sockname
    )
    env = exports(text(await ask(Onboard(state), f)))
    assert env["HTTPS_PROXY"] == f"http://{proxy}"


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?dir=relative/dir",
        "?dir=%2Fhome%2Fa%0Aexport%20X%3D1",  # a newline in it
        f"?dir={MEMBER_DIR}&proxy=gw.example",  # no port
        f"?dir={MEMBER_DIR}&proxy=gw.example:0",
        f"?dir={MEMBER_DIR}&proxy=$(id):80",
    ],
)
async def test_a_bad_dir_or_proxy_is_refused(state: GatewayState, query: str) -> None:
    f = onboarding_flow(f"/env{query}", {"Authorization": f"Bearer {ALICE_KEY}"})
    await ask(Onboard(state), f)
    assert f.response is not None and f.response.status_code == 400
    assert "export" not in text(f)


async def test_a_windows_member_directory_is_taken(state: GatewayState) -> None:
    f = onboarding_flow(
        "/env?dir=C:%5CUsers%5Calice%5Cllamakey", {"Authorization": f"Bearer {ALICE_KEY}"}
    )
    env = exports(text(await ask(Onboard(state), f)))
    assert env["SSL_CERT_FILE"] == "C:\\Users\\alice\\llamakey/" + ca.BUNDLE_FILE


# --------------------------------------------------------------------------------------------
# Refused: 401 and nothing else


@pytest.mark.parametrize(
    ("headers", "refusal"),
    [
        ({}, Refusal.NO_KEY),
        ({"Authorization": f"Bearer {STRANGER_KEY}"}, Refusal.UNKNOWN_KEY),
        ({"Authorization": "Bearer not-a-key"}, Refusal.UNKNOWN_KEY),
        ({"Authorization": f"Bearer {BOB_KEY}"}, Refusal.DISABLED),
        ({"Authorization": f"Bearer {CAROL_KEY}"}, Refusal.EXPIRED),
        ({"Proxy-Authorization": basic("alice", STRANGER_KEY)}, Refusal.UNKNOWN_KEY),
    ],
    ids=["none", "unknown", "malformed", "disabled", "expired", "proxy-unknown"],
)
async def test_env_without_a_usable_key_is_401_and_nothing_else(
    state: GatewayState,
    headers: dict[str, str],
    refusal: Refusal,
    caplog: pytest.LogCaptureFixture,
) -> None:
    f = await ask(Onboard(state), onboarding_flow(f"/env?dir={MEMBER_DIR}", headers))
    assert f.response is not None and f.response.status_code == 401
    assert f.response.headers["www-authenticate"].startswith("Bearer")
    body = text(f)
    assert body.startswith("LlaMaKey: ") and body.count("\n") == 1
    assert "export" not in body and USER_HEADER not in f.response.headers
    assert f.metadata[keys.REFUSED] == refusal.value
    assert state.flows(f).refusal is refusal
    assert f"refused /env from 10.1.2.3 ({refusal.value})" in caplog.text
    for key in (STRANGER_KEY, BOB_KEY, CAROL_KEY):
        assert key not in caplog.text and key not in request_text(f)


# --------------------------------------------------------------------------------------------
# Only the onboarding host, only in plain HTTP


async def test_other_flows_are_left_alone(state: GatewayState) -> None:
    addon = Onboard(state)
    inside_a_tunnel = provider_flow("https://api.openai.com/v1/models")
    inside_a_tunnel.request.host_header = "lmk.invalid"
    elsewhere = onboarding_flow("/ca.pem")
    elsewhere.request.host = "example.com"
    for f in (inside_a_tunnel, elsewhere):
        await ask(addon, f)
        assert f.response is None
    IdentifyProvider(state).requestheaders(inside_a_tunnel)  # identify refuses that one
    assert inside_a_tunnel.response is not None
    assert inside_a_tunnel.response.status_code == 421


async def test_a_tunnel_to_the_onboarding_host_is_refused(state: GatewayState) -> None:
    addon = Onboard(state)
    with mitm_context(addon):
        for authority in ("lmk.invalid:443", "LMK.invalid.:80"):
            c = connect_flow(authority)
            addon.http_connect(c)
            assert c.response is not None and c.response.status_code == 403
            assert b"http://lmk.invalid/" in (c.response.content or b"")
        other = connect_flow("api.openai.com:443")
        addon.http_connect(other)
        assert other.response is None


# --------------------------------------------------------------------------------------------
# Through the whole gateway: first, whatever the other steps would do; refusals audited


def audit_rows(db: Path) -> list[dict[str, Any]]:
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("select * from requests")]


async def through_gateway(
    state: GatewayState, f: http.HTTPFlow, db: Path | None = None
) -> http.HTTPFlow:
    """The hooks mitmproxy runs for a request a step answers (no upstream); with `db`, waits
    for the refusal's audit row there to be completed."""
    steps = [s for s in gateway_addons(state) if type(s).__name__ != "ConfigLoader"]
    audit_log = next(s for s in steps if isinstance(s, AuditLog))
    with mitm_context(*steps) as tctx:
        audit_log.running()
        trigger = tctx.master.addons.trigger_event
        await trigger(http_hooks.HttpRequestHeadersHook(f))
        await trigger(http_hooks.HttpRequestHook(f))
        assert f.response is not None, "it would have gone upstream"
        await trigger(http_hooks.HttpResponseHeadersHook(f))
        await trigger(http_hooks.HttpResponseHook(f))
        if db is not None:
            wait_until(lambda: [r for r in audit_rows(db) if r["completed_ts"]], "the row")
        audit_log.done()
    return f


def test_onboarding_runs_before_identify() -> None:
    names = [type(s).__name__ for s in gateway_addons()]
    assert names.index("Onboard") < names.index("IdentifyProvider") < names.index("Authenticate")


@pytest.mark.parametrize(
    "proxy",
    [{"other_hosts": "block"}, {"proxy_auth": True}, {"other_hosts": "block", "proxy_auth": True}],
    ids=["block", "proxy-auth", "both"],
)
async def test_it_answers_first_under_block_and_proxy_auth(
    certs: Path, tmp_path: Path, proxy: dict[str, Any], isolated_log_scrubber: None
) -> None:
    state = onboard_state(certs, tmp_path, **proxy)
    pem = await through_gateway(state, onboarding_flow("/ca.pem"))  # no credentials at all
    assert pem.response is not None and pem.response.status_code == 200
    assert pem.response.content == ca.ca_certificate_pem(certs)
    env = await through_gateway(
        state,
        onboarding_flow(f"/env?dir={MEMBER_DIR}", {"Authorization": f"Bearer {ALICE_KEY}"}),
    )
    assert env.response is not None and env.response.status_code == 200
    assert exports(text(env))["OPENAI_API_KEY"] == KEY_PLACEHOLDER  # the redact step kept it
    assert audit_rows(tmp_path / "audit.db") == []  # handed out: a log line, not a row
    # Next to it, another host in plain HTTP is still blocked, or still needs credentials.
    other = onboarding_flow("/")
    other.request.host = "example.com"
    await through_gateway(state, other)
    assert other.response is not None
    assert other.response.status_code == (403 if "other_hosts" in proxy else 407)


async def test_a_refused_env_is_an_audit_row_without_the_key(
    certs: Path, tmp_path: Path, isolated_log_scrubber: None
) -> None:
    state = onboard_state(certs, tmp_path, proxy_auth=True)
    f = onboarding_flow(
        f"/env?dir={MEMBER_DIR}&key={STRANGER_KEY}", {"Authorization": f"Bearer {STRANGER_KEY}"}
    )
    db = tmp_path / "audit.db"
    await through_gateway(state, f, db)
    assert f.response is not None and f.response.status_code == 401
    (row,) = audit_rows(db)
    assert row["refused_by"] == Refusal.UNKNOWN_KEY.value
    assert (row["status"], row["method"], row["host"], row["path"]) == (
        401,
        "GET",
        "lmk.invalid",
        "/env",
    )
    assert row["user"] is None and row["provider"] is None
    assert row["client_addr"] == "10.1.2.3"
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("audit.db*"))
    assert STRANGER_KEY.encode() not in stored and STRANGER_KEY[4:].encode() not in stored
    assert STRANGER_KEY not in request_text(f)
