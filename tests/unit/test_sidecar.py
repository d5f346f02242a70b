"""The sidecar: its credential goes where the application's SDK put its key (and only into
provider requests inside intercepted TLS); a JWT is fetched again before it expires; a master
key file must be the owner's alone."""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import jwt
import pytest
from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode

from llamakey import credentials
from llamakey.files import write_atomically
from llamakey.providers import ErrorShape
from llamakey.sidecar.addon import AddCredential, basic_proxy_authorization
from llamakey.sidecar.server import provider_index
from llamakey.sidecar.sources import (
    CHECK_FILE_SECONDS,
    NO_EXP_SECONDS,
    REFRESH_BEFORE_SECONDS,
    RETRY_SECONDS,
    CredentialUnavailable,
    JwtCommand,
    MasterKeyFile,
    run_command,
)
from tests.unit.builders import assert_shape, body, connect_flow, provider_flow, request_text

KEY = credentials.new_master_key()
APP_KEY = "sk-proj-THEAPPLICATIONSownKEY0123456789"  # what an application may have set


class Fixed:
    """A credential source that always has `value` (or, with None, none)."""

    def __init__(self, value: str | None) -> None:
        self.value = value

    def describe(self) -> str:
        return "fixed"

    async def current(self) -> str:
        if self.value is None:
            raise CredentialUnavailable("the JWT command 'get-token' exited with status 1")
        return self.value


def sidecar(value: str | None = KEY, *, proxy_auth: bool = False) -> AddCredential:
    return AddCredential(Fixed(value), provider_index(), proxy_auth=proxy_auth)


# --------------------------------------------------------------------------------------------
# AddCredential


@pytest.mark.parametrize(
    ("url", "headers", "where"),
    [
        # a placeholder where the SDK put its key: replaced there
        (
            "https://api.openai.com/v1/chat/completions",
            {"Authorization": "Bearer set-by-lmk-sidecar"},
            ("authorization", f"Bearer {KEY}"),
        ),
        (
            "https://api.anthropic.com/v1/messages",
            {"x-api-key": "set-by-lmk-sidecar"},
            ("x-api-key", KEY),
        ),
        # no key at all: the provider's own carrier
        ("https://api.openai.com/v1/models", {}, ("authorization", f"Bearer {KEY}")),
        ("https://api.anthropic.com/v1/messages", {}, ("x-api-key", KEY)),
        (
            "https://generativelanguage.googleapis.com/v1beta/models/g:generateContent",
            {},
            ("x-goog-api-key", KEY),
        ),
        (
            "https://myres.openai.azure.com/openai/deployments/d/chat/completions",
            {},
            ("api-key", KEY),
        ),
        # an hf_ placeholder (huggingface_hub routes by it): the plain master key
        (
            "https://router.huggingface.co/v1/chat/completions",
            {"Authorization": "Bearer hf_set-by-lmk-sidecar"},
            ("authorization", f"Bearer {KEY}"),
        ),
    ],
)
async def test_the_credential_goes_where_the_sdk_put_its_key(
    url: str, headers: dict[str, str], where: tuple[str, str]
) -> None:
    f = provider_flow(url, headers)
    await sidecar().requestheaders(f)
    assert f.response is None
    name, value = where
    assert f.request.headers.get_all(name) == [value]
    assert "set-by-lmk-sidecar" not in request_text(f)


async def test_the_query_key_is_replaced_in_the_query() -> None:
    f = provider_flow(
        "https://generativelanguage.googleapis.com/v1beta/models/g:generateContent?key=placeholder"
    )
    await sidecar().requestheaders(f)
    assert f.request.query.get_all("key") == [KEY]
    assert "x-goog-api-key" not in f.request.headers


async def test_whatever_the_application_sent_does_not_go_on() -> None:
    """Its own key (in any carrier, any scheme) and its proxy credentials are removed; the
    credential goes only into the carriers it used."""
    f = provider_flow(
        "https://api.anthropic.com/v1/messages",
        {
            "x-api-key": APP_KEY,
            "Authorization": "Basic " + APP_KEY,  # not a bearer: still the application's
            "api-key": APP_KEY,
            "Proxy-Authorization": basic_proxy_authorization("app", APP_KEY),
        },
    )
    await sidecar().requestheaders(f)
    assert APP_KEY not in request_text(f)
    assert "proxy-authorization" not in f.request.headers
    assert f.request.headers["x-api-key"] == KEY
    assert f.request.headers["api-key"] == KEY
    assert "authorization" not in f.request.headers


async def test_a_plain_http_request_never_gets_the_credential() -> None:
    f = provider_flow("http://api.openai.com/v1/models", {"Authorization": "Bearer x"})
    f.client_conn.timestamp_tls_setup = None  # a proxy request in clear, no tunnel
    f.client_conn.proxy_mode = ProxyMode.parse("upstream:http://central:8080")
    await sidecar().requestheaders(f)
    assert KEY not in request_text(f)
    assert f.response is None  # the central proxy answers it (it refuses plain HTTP)


@pytest.mark.parametrize(
    ("sni", "connect"),
    [
        ("api.openai.com", None),  # the TLS server name another provider's
        (None, ("api.openai.com", 443)),  # no server name: the CONNECT target names the tunnel
        ("example.com", None),  # no provider at all
    ],
)
async def test_a_request_for_another_host_than_its_tunnel_is_refused(
    sni: str | None, connect: tuple[str, int] | None
) -> None:
    url = "https://api.anthropic.com/v1/messages"
    f = provider_flow(url, {"x-api-key": "placeholder"}, sni=sni, connect=connect)
    await sidecar().requestheaders(f)
    assert f.response is not None and f.response.status_code == 421
    assert KEY not in request_text(f)


async def test_no_credential_is_a_503_in_the_providers_shape() -> None:
    f = provider_flow("https://api.anthropic.com/v1/messages", {"x-api-key": APP_KEY})
    await sidecar(None).requestheaders(f)
    assert f.response is not None and f.response.status_code == 503
    message = assert_shape(ErrorShape.ANTHROPIC, body(f), 503)
    assert "exited with status 1" in message
    assert f.response.headers["x-lmk-refused"] == "sidecar_credential_unavailable"
    assert f.response.headers["retry-after"] == "2"


async def test_a_failure_refuses_the_request_and_logs_no_credential(
    caplog: pytest.LogCaptureFixture,
) -> None:
    car = sidecar()

    def broken(flow: object) -> None:
        raise RuntimeError(f"cannot place {KEY}")

    car._provider = broken  # type: ignore[assignment,method-assign]
    f = provider_flow("https://api.openai.com/v1/models")
    with caplog.at_level("ERROR"):
        await car.requestheaders(f)
    assert f.response is not None and f.response.status_code == 500
    assert json.loads(f.response.content or b"")["error"]["code"] == "internal_error"
    assert "cannot place" in caplog.text and KEY not in caplog.text


async def test_answers_stream_through() -> None:
    car = sidecar()
    f = provider_flow("https://api.openai.com/v1/chat/completions")
    await car.requestheaders(f)
    f.response = http.Response.make(200, b"", {"content-type": "text/event-stream"})
    car.responseheaders(f)
    assert f.response.stream is True


@pytest.mark.parametrize("proxy_auth", [True, False])
async def test_proxy_credentials_on_the_connect_only_when_asked(proxy_auth: bool) -> None:
    upstream_connect = connect_flow("api.openai.com:443")
    await sidecar(proxy_auth=proxy_auth).http_connect_upstream(upstream_connect)
    header = upstream_connect.request.headers.get("proxy-authorization")
    if proxy_auth:
        assert credentials.proxy_credentials(header) == ("lmk-sidecar", KEY)
    else:
        assert header is None


async def test_proxy_credentials_on_a_plain_request_to_the_central_proxy() -> None:
    f = provider_flow("http://example.com/", {"Proxy-Authorization": "Basic YXBwOnB3"})
    f.client_conn.timestamp_tls_setup = None
    f.client_conn.proxy_mode = ProxyMode.parse("upstream:http://central:8080")
    await sidecar(proxy_auth=True).requestheaders(f)
    assert credentials.proxy_credentials(f.request.headers["proxy-authorization"]) == (
        "lmk-sidecar",
        KEY,
    )


TOKEN = jwt.encode({"exp": 4102444800, "sub": "svc"}, "s" * 32, algorithm="HS256")


@pytest.mark.parametrize(
    ("credential", "shown"),
    [(TOKEN, "sent [provider key redacted]"), (KEY, f"sent lmk_...{KEY[-4:]} (unknown)")],
)
async def test_the_credential_is_masked_in_log_records(credential: str, shown: str) -> None:
    car = sidecar(credential)
    await car.requestheaders(provider_flow("https://api.openai.com/v1/models"))
    assert car.scrubber.text(f"sent {credential}") == shown


# --------------------------------------------------------------------------------------------
# JwtCommand


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Issuer:
    """A fake command: prints a new JWT each time, living `lifetime` seconds (None: no exp)."""

    def __init__(self, clock: Clock, lifetime: float | None = 3600) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.runs = 0
        self.fail = False

    def __call__(self, argv: Sequence[str]) -> str:
        assert list(argv) == ["get-token", "--audience", "lmk"]
        if self.fail:
            raise CredentialUnavailable("the JWT command get-token exited with status 1")
        self.runs += 1
        claims: dict[str, object] = {"sub": "svc", "n": self.runs}
        if self.lifetime is not None:
            claims["exp"] = int(self.clock.now + self.lifetime)
        return jwt.encode(claims, "s" * 32, algorithm="HS256") + "\n"


def command(clock: Clock, issuer: Issuer) -> JwtCommand:
    return JwtCommand("get-token --audience lmk", run=issuer, clock=clock)


def number(token: str) -> int:
    n: int = jwt.decode(token, options={"verify_signature": False})["n"]
    return n


async def test_the_token_is_cached_until_shortly_before_its_exp() -> None:
    clock = Clock()
    issuer = Issuer(clock, lifetime=3600)
    source = command(clock, issuer)
    assert number(await source.current()) == 1
    clock.now += 3600 - REFRESH_BEFORE_SECONDS - 1
    assert number(await source.current()) == 1
    clock.now += 1  # REFRESH_BEFORE_SECONDS before exp: a new one
    assert number(await source.current()) == 2
    assert issuer.runs == 2


async def test_a_short_lived_token_is_fetched_again_half_way() -> None:
    clock = Clock()
    issuer = Issuer(clock, lifetime=30)
    source = command(clock, issuer)
    await source.current()
    clock.now += 14.9
    await source.current()
    assert issuer.runs == 1
    clock.now += 0.1
    await source.current()
    assert issuer.runs == 2


async def test_a_token_without_exp_is_fetched_again_after_a_while() -> None:
    clock = Clock()
    issuer = Issuer(clock, lifetime=None)
    source = command(clock, issuer)
    await source.current()
    clock.now += NO_EXP_SECONDS - 1
    await source.current()
    assert issuer.runs == 1
    clock.now += 1
    await source.current()
    assert issuer.runs == 2


async def test_requests_waiting_together_run_the_command_once() -> None:
    clock = Clock()
    issuer = Issuer(clock)
    source = command(clock, issuer)
    tokens = await asyncio.gather(*(source.current() for _ in range(20)))
    assert issuer.runs == 1 and len(set(tokens)) == 1


async def test_a_failed_fetch_keeps_a_valid_token_and_tries_again_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    issuer = Issuer(clock, lifetime=3600)
    source = command(clock, issuer)
    first = await source.current()
    clock.now += 3600 - 30  # time to refresh, 30 s of validity left
    issuer.fail = True
    with caplog.at_level("WARNING"):
        assert await source.current() == first
    assert "exited with status 1" in caplog.text and "still valid for 30 s" in caplog.text
    assert first not in caplog.text
    fetches = source.fetches
    clock.now += RETRY_SECONDS - 1
    assert await source.current() == first
    assert source.fetches == fetches  # not run again for every request
    issuer.fail = False
    clock.now += 1
    assert number(await source.current()) == 2


async def test_no_valid_token_left_refuses() -> None:
    clock = Clock()
    issuer = Issuer(clock, lifetime=3600)
    source = command(clock, issuer)
    await source.current()
    clock.now += 3600
    issuer.fail = True
    with pytest.raises(CredentialUnavailable, match="exited with status 1"):
        await source.current()


@pytest.mark.parametrize(
    ("printed", "problem"),
    [
        ("", "did not print one token"),
        ("two tokens", "did not print one token"),
        ("not-a-jwt", "printed no JWT"),
        (jwt.encode({"exp": 1}, "s" * 32, algorithm="HS256"), "has expired"),
        (jwt.encode({"exp": "soon"}, "s" * 32, algorithm="HS256"), "bad exp"),
    ],
)
def test_what_the_command_printed_must_be_one_live_jwt(printed: str, problem: str) -> None:
    source = JwtCommand("get-token", run=lambda argv: printed, clock=Clock())
    with pytest.raises(CredentialUnavailable, match=problem) as caught:
        source.fetch()
    if printed:
        assert printed not in str(caught.value)


def test_a_real_command_runs_and_its_failure_is_said_without_a_token() -> None:
    token = jwt.encode({"exp": 4102444800}, "s" * 32, algorithm="HS256")
    printed = run_command([sys.executable, "-c", f"print({token!r})"])
    assert printed.strip() == token
    failing = f"import sys; sys.stderr.write('denied for {token}\\n'); sys.exit(3)"
    with pytest.raises(CredentialUnavailable) as caught:
        run_command([sys.executable, "-c", failing])
    assert "exited with status 3: denied for [token]" in str(caught.value)
    with pytest.raises(CredentialUnavailable, match="cannot run the JWT command"):
        run_command(["/nonexistent/get-token"])
    garbage = "import sys; sys.stdout.buffer.write(bytes([0xff, 0xfe]) + b'.x.y')"
    source = JwtCommand(f"{sys.executable} -c {shlex.quote(garbage)}")
    with pytest.raises(CredentialUnavailable, match="printed no JWT"):
        source.fetch()


def test_an_unparsable_or_empty_command_is_refused() -> None:
    with pytest.raises(CredentialUnavailable, match="cannot be parsed"):
        JwtCommand("get-token 'unclosed")
    with pytest.raises(CredentialUnavailable, match="empty"):
        JwtCommand("  ")


# --------------------------------------------------------------------------------------------
# MasterKeyFile


def key_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "master.key"
    path.write_text(text)
    path.chmod(mode)
    return path


async def test_a_0600_key_file_gives_its_key(tmp_path: Path) -> None:
    source = MasterKeyFile(key_file(tmp_path, KEY + "\n"))
    assert await source.current() == KEY
    assert KEY not in source.describe() and KEY[-4:] in source.describe()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o700])
def test_a_key_file_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = key_file(tmp_path, KEY, mode)
    with pytest.raises(CredentialUnavailable, match=f"is mode {mode:04o}, not 0600") as caught:
        MasterKeyFile(path)
    assert f"chmod 600 {path}" in str(caught.value) and KEY not in str(caught.value)


@pytest.mark.parametrize("text", ["", "sk-proj-notamasterkey", f"{KEY}\n{KEY}"])
def test_a_key_file_without_one_master_key_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(CredentialUnavailable, match="does not hold a master key") as caught:
        MasterKeyFile(key_file(tmp_path, text))
    assert KEY not in str(caught.value)


def test_a_missing_or_odd_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CredentialUnavailable, match="No such file"):
        MasterKeyFile(tmp_path / "absent")
    with pytest.raises(CredentialUnavailable, match="not a regular file"):
        MasterKeyFile(tmp_path)


async def test_a_new_key_in_the_file_is_followed_within_a_second(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    path = key_file(tmp_path, KEY)
    source = MasterKeyFile(path, clock=clock)
    rotated = credentials.new_master_key()
    write_atomically(path, rotated + "\n", 0o600)  # `lmk keys rotate`, then the new key saved
    assert await source.current() == KEY  # not looked at again yet
    clock.now += CHECK_FILE_SECONDS
    with caplog.at_level("INFO"):
        assert await source.current() == rotated
    assert f"now sending lmk_...{rotated[-4:]}" in caplog.text
    assert rotated not in caplog.text and KEY not in caplog.text


@pytest.mark.parametrize("change", ["loosen the mode", "no key"])
async def test_a_changed_file_without_a_good_key_keeps_the_key_read_before(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, change: str
) -> None:
    clock = Clock()
    path = key_file(tmp_path, KEY)
    source = MasterKeyFile(path, clock=clock)
    if change == "no key":
        write_atomically(path, "\n", 0o600)
    else:
        path.chmod(0o644)
    clock.now += CHECK_FILE_SECONDS
    with caplog.at_level("ERROR"):
        assert await source.current() == KEY
    said = "is mode 0644, not 0600" if change != "no key" else "does not hold a master key"
    assert said in caplog.text and "still sending the master key read before" in caplog.text
    assert KEY not in caplog.text
