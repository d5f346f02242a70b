"""`lmk sidecar`: an application given no key reaches a provider through the sidecar and the
central proxy, with the official SDKs, and is audited as the sidecar's user; the sidecar's
machine never holds a provider key, and its logs and files hold no credential."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llamakey import ca
from llamakey.files import write_atomically
from tests.conftest import make_gateway
from tests.e2e.test_audit import ids, rows
from tests.harness import (
    LMK,
    REAL_KEYS,
    Gateway,
    free_port,
    run_client,
    run_lmk,
    wait_until,
)
from tests.mock_upstream import MockUpstream, mock_text


@dataclass
class Sidecar:
    """One `lmk sidecar` process, in a directory of its own (the sidecar's machine)."""

    workdir: Path
    central: Gateway
    key: str
    central_ca: Path | None = None
    extra_args: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / "sidecar.log"

    @property
    def key_file(self) -> Path:
        return self.workdir / "master.key"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.key_file.write_text(self.key + "\n")
        self.key_file.chmod(0o600)
        ca = self.central_ca or self.central.workdir / "certs" / "mitmproxy-ca-cert.pem"
        # The sidecar's machine: no provider key, no proxy settings of ours.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.endswith(("_API_KEY", "_TOKEN", "_PROXY", "_proxy")) and "LMK" not in k
        }
        env["XDG_CONFIG_HOME"] = str(self.workdir / "config")
        command = [LMK, "sidecar", "--central", f"http://127.0.0.1:{self.central.port}"]
        command += ["--central-ca", str(ca)]
        if "--jwt-command" not in self.extra_args:
            command += ["--key-file", str(self.key_file)]
        command += ["--listen", f"127.0.0.1:{self.port}", *self.extra_args]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir
            )
        wait_until(
            lambda: "listening on" in self.log.read_text() or self.process.poll() is not None,  # type: ignore[union-attr]
            "the sidecar to listen",
            timeout=30,
        )
        assert self.process.poll() is None, self.log.read_text()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def app_env(self) -> dict[str, str]:
        """The environment the banner prints for the application, on a clean copy of ours."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.endswith(("_API_KEY", "_TOKEN", "_PROXY", "_proxy"))
        }
        for line in self.log.read_text().splitlines():
            if line.strip().startswith("export "):
                name, _, value = line.strip().removeprefix("export ").partition("=")
                (env[name],) = shlex.split(value)
        return env

    def written(self) -> dict[Path, bytes]:
        """Every file on the sidecar's machine but the key file it was given: its log, its CA
        directory, anything else it wrote."""
        return {
            path: path.read_bytes()
            for path in self.workdir.rglob("*")
            if path.is_file() and path != self.key_file
        }


@pytest.fixture
def sidecar(tmp_path: Path, gateway: Gateway) -> Iterator[Sidecar]:
    car = Sidecar(tmp_path / "sidecar", gateway, gateway.keys["alice"])
    car.start()
    yield car
    car.stop()


OPENAI_APP = """
from openai import OpenAI
client = OpenAI()
messages = [{"role": "user", "content": "hi"}]
answer = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
print(answer.choices[0].message.content)
stream = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
print("".join(c.choices[0].delta.content or "" for c in stream if c.choices))
"""


# An application whose request fails: what it was answered.
FAILING_APP = """
import openai
try:
    openai.OpenAI(max_retries=0).models.list()
except openai.APIStatusError as error:
    print(error.status_code, error.response.text)
"""


def new_rows(db: Path, before: set[str], count: int) -> list[dict[str, object]]:
    """The `count` completed rows that were not there before."""

    def fresh() -> list[dict[str, object]]:
        return [r for r in rows(db, "completed_ts is not null") if r["id"] not in before]

    wait_until(lambda: len(fresh()) >= count, f"{count} new completed audit rows")
    return fresh()


def assert_no_secret_on_the_sidecar(car: Sidecar) -> None:
    """No provider key anywhere on the sidecar's machine, and its master key only in the file
    it was given (not in its log, not in its CA directory, not in any file it wrote)."""
    written = car.written()
    assert car.log in written and any(p.name == "mitmproxy-ca.pem" for p in written)
    for path, content in written.items():
        for provider, key in REAL_KEYS.items():
            assert key.encode() not in content, f"{provider}'s real key in {path}"
        assert car.key.encode() not in content, f"the master key in {path}"


def test_openai_sdk_through_the_sidecar_is_audited_as_its_user(
    sidecar: Sidecar, gateway: Gateway, mock: MockUpstream
) -> None:
    seen_before = len(mock.requests(host="api.openai.com"))
    before = ids(gateway.audit_db)
    env = sidecar.app_env()
    assert env["OPENAI_API_KEY"] == "set-by-lmk-sidecar"  # the application holds no key

    done = run_client(OPENAI_APP, env)

    assert done.returncode == 0, done.stderr + sidecar.log.read_text()
    assert done.stdout.splitlines() == [mock_text(), mock_text()]
    seen = mock.requests(host="api.openai.com")[seen_before:]
    assert [s.header("authorization") for s in seen] == [f"Bearer {REAL_KEYS['openai']}"] * 2
    audited = new_rows(gateway.audit_db, before, 2)
    assert [(r["user"], r["status"], r["stream"]) for r in audited] == [
        ("alice", 200, 0),
        ("alice", 200, 1),
    ]
    sidecar.stop()  # its last words are in the log too
    assert_no_secret_on_the_sidecar(sidecar)


def test_the_key_goes_where_the_sdk_put_its_own(
    sidecar: Sidecar, gateway: Gateway, mock: MockUpstream
) -> None:
    """Anthropic's SDK sends x-api-key, google-genai x-goog-api-key: the sidecar's key goes
    there (the application's placeholder does not go on), and each is audited as alice."""
    before = ids(gateway.audit_db)
    app = """
import anthropic
from google import genai
answer = anthropic.Anthropic().messages.create(
    model="claude-3-5-haiku-20241022", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
)
print(answer.content[0].text)
gemini = genai.Client()
print(gemini.models.generate_content(model="gemini-2.0-flash", contents="hi").text)
"""
    done = run_client(app, sidecar.app_env())

    assert done.returncode == 0, done.stderr + sidecar.log.read_text()
    assert done.stdout.splitlines() == [mock_text(), mock_text()]
    audited = new_rows(gateway.audit_db, before, 2)
    assert sorted((r["provider"], r["user"], r["status"]) for r in audited) == [
        ("anthropic", "alice", 200),
        ("gemini", "alice", 200),
    ]
    for host, key in (
        ("api.anthropic.com", REAL_KEYS["anthropic"]),
        ("generativelanguage.googleapis.com", REAL_KEYS["gemini"]),
    ):
        last = mock.requests(host=host)[-1]
        assert key in {value for _, value in last.headers} | {
            value.removeprefix("Bearer ") for _, value in last.headers
        }
        assert not any("set-by-lmk-sidecar" in value for _, value in last.headers)


@pytest.fixture(scope="module")
def strict_central(
    tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream
) -> Iterator[Gateway]:
    """A central proxy that lets no CONNECT through without a master key (proxy_auth)."""
    gw = make_gateway(
        tmp_path_factory.mktemp("central-proxy-auth"), mock, proxy_table={"proxy_auth": True}
    )
    gw.start()
    yield gw
    gw.stop()


def test_proxy_auth_sends_the_key_on_the_connect_too(
    tmp_path: Path, strict_central: Gateway
) -> None:
    """Behind `proxy_auth = true` the CONNECT needs the key: without --proxy-auth the central
    proxy answers 407 and nothing goes; with it the application gets its answer."""
    plain = Sidecar(tmp_path / "plain", strict_central, strict_central.keys["bob"])
    plain.start()
    try:
        refused = run_client(FAILING_APP, plain.app_env())
    finally:
        plain.stop()
    assert refused.stdout.startswith("502 "), refused.stdout + refused.stderr
    assert "refused HTTP CONNECT request: 407" in refused.stdout

    before = ids(strict_central.audit_db)
    car = Sidecar(
        tmp_path / "auth", strict_central, strict_central.keys["bob"], extra_args=("--proxy-auth",)
    )
    car.start()
    try:
        done = run_client(OPENAI_APP, car.app_env())
    finally:
        car.stop()
    assert done.returncode == 0, done.stderr + car.log.read_text()
    audited = new_rows(strict_central.audit_db, before, 2)
    assert {r["user"] for r in audited} == {"bob"}
    assert_no_secret_on_the_sidecar(car)


def test_a_central_proxy_the_sidecar_cannot_verify_gets_nothing(
    tmp_path: Path, gateway: Gateway, mock: MockUpstream
) -> None:
    """Given another CA than the central proxy's, the sidecar refuses the central proxy's
    certificate: the request is never sent, so neither its key nor anything else leaves."""
    other_ca = mock.ca_pem_path  # a CA, but not the one the central proxy signs with
    car = Sidecar(tmp_path / "sidecar", gateway, gateway.keys["alice"], central_ca=other_ca)
    car.start()
    seen_before = len(mock.all_seen)
    before = ids(gateway.audit_db)
    try:
        done = run_client(FAILING_APP, car.app_env())
    finally:
        car.stop()
    assert done.stdout.startswith("502 "), done.stdout + done.stderr
    assert "Certificate verify failed" in done.stdout
    assert len(mock.all_seen) == seen_before
    assert ids(gateway.audit_db) == before


def test_other_hosts_pass_through_untouched(
    sidecar: Sidecar, gateway: Gateway, mock: MockUpstream
) -> None:
    """A host that is no provider is tunneled, through the central proxy (which tunnels it
    as configured): its own certificate reaches the client, and no credential is added."""
    url = f"https://localhost:{mock.port}/v1/models"  # a site of its own, no provider host
    before = len(mock.requests(host="localhost"))
    curl = ["curl", "-sS", "--max-time", "20", "-x", f"http://127.0.0.1:{sidecar.port}"]
    curl += ["--cacert", str(mock.ca_pem_path), "-o", "/dev/null", "-w", "%{http_code}", url]
    done = subprocess.run(
        curl,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.stdout == "200", done.stderr  # verified against the site's own CA
    (seen,) = mock.requests(host="localhost")[before:]
    assert seen.header("authorization") is None and seen.header("x-api-key") is None


def test_a_stream_arrives_event_by_event_through_both_proxies(
    sidecar: Sidecar, mock: MockUpstream
) -> None:
    app = """
import json, time
from openai import OpenAI
times = []
stream = OpenAI().chat.completions.create(model="gpt-4o-mini", stream=True,
    messages=[{"role": "user", "content": "hi"}],
    extra_headers={"x-mock-chunks": "8", "x-mock-chunk-delay": "0.2"})
for chunk in stream:
    times.append(time.monotonic())  # CLOCK_MONOTONIC: the same clock as the mock's
print(json.dumps({"id": stream.response.headers["x-mock-request-id"], "times": times}))
"""
    done = run_client(app, sidecar.app_env())
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout)
    sent, received = mock.sent_times[got["id"]], got["times"]
    assert len(received) >= 8
    # A buffering sidecar would deliver the first event about 8 x 0.2 s late.
    lags = [r - s for s, r in zip(sent, received, strict=False)]
    assert max(lags) < 0.1, lags


def test_a_ca_of_its_own_that_misses_hosts_is_kept_and_said(
    tmp_path: Path, gateway: Gateway
) -> None:
    """The sidecar keeps the CA it finds (the application trusts it) and says which provider
    hosts it does not permit."""
    car = Sidecar(tmp_path / "sidecar", gateway, gateway.keys["alice"])
    certs = car.workdir / "config" / "llamakey" / "sidecar"  # its default certs directory
    ca.init_ca(certs, ["api.openai.com"])
    before = (certs / ca.CA_CERT_FILE).read_bytes()
    car.start()
    try:
        done = run_client(OPENAI_APP, car.app_env())
    finally:
        car.stop()
    assert done.returncode == 0, done.stderr
    assert (certs / ca.CA_CERT_FILE).read_bytes() == before
    warning = car.log.read_text().splitlines()[0]
    assert warning.startswith(f"lmk: warning: the sidecar's CA in {certs} does not permit ")
    assert "api.anthropic.com" in warning and "api.openai.com" not in warning


# A token issuer standing in for the team's identity provider. This central proxy has no [jwt]
# table, so it refuses the token, which proves the token (not the placeholder) went to it; a
# central proxy that verifies and accepts it: tests/e2e/test_jwt.py.
ISSUER = (
    "import jwt, time; "
    "print(jwt.encode({'sub': 'ci', 'exp': int(time.time()) + 3600}, 'k' * 32, algorithm='HS256'))"
)


def test_a_jwt_from_the_command_goes_to_the_central_proxy(
    tmp_path: Path, gateway: Gateway, mock: MockUpstream
) -> None:
    command = shlex.join([sys.executable, "-c", ISSUER])
    car = Sidecar(
        tmp_path / "sidecar", gateway, gateway.keys["alice"], extra_args=("--jwt-command", command)
    )
    car.start()
    seen_before = len(mock.all_seen)
    before = ids(gateway.audit_db)
    try:
        done = run_client(FAILING_APP, car.app_env())
    finally:
        car.stop()
    assert done.stdout.startswith("401 "), done.stdout + done.stderr
    (row,) = new_rows(gateway.audit_db, before, 1)
    assert row["refused_by"] == "unknown_master_key"  # the token, not the placeholder
    assert len(mock.all_seen) == seen_before
    assert "JWT printed by" in car.log.read_text()
    jwt_shaped = re.compile(rb"eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]+")
    for path, content in car.written().items():
        assert not jwt_shaped.search(content), f"a token in {path}"


def test_a_rotated_key_written_to_the_file_is_used_without_a_restart(
    tmp_path: Path, gateway: Gateway
) -> None:
    key = gateway.new_user("sidecar-rotated", "research")
    car = Sidecar(tmp_path / "sidecar", gateway, key)
    call = "from openai import OpenAI\nprint(OpenAI(max_retries=0).models.list().data[0].id)\n"
    car.start()
    try:
        env = car.app_env()
        wait_until(lambda: run_client(call, env).returncode == 0, "the new user to be accepted")
        rotated = run_lmk(gateway.config, "keys", "rotate", "sidecar-rotated")
        assert rotated.returncode == 0, rotated.stderr
        wait_until(lambda: run_client(call, env).returncode != 0, "the old key to be refused")
        write_atomically(car.key_file, rotated.stdout.strip() + "\n", 0o600)
        wait_until(lambda: run_client(call, env).returncode == 0, "the new key to be sent")
    finally:
        car.stop()
    assert "now sending lmk_..." in car.log.read_text()
