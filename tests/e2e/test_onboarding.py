"""A member onboards from another machine, with nothing of the admin's files.

The other machine is a fresh home directory (HOME and XDG_CONFIG_HOME point there, the working
directory holds no configuration): `lmk env --proxy` against a real `lmk serve` writes the CA,
the bundle and the env file there, and a fresh process configured only by that env file (a
real openai SDK client, curl) reaches the provider mock through the proxy. The README's
curl recipe is run as written, by `sh`.
"""

from __future__ import annotations

import os
import re
import shlex
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from llamakey import ca
from tests.conftest import make_gateway
from tests.harness import LMK, REAL_KEYS, Gateway, run_lmk, wait_until
from tests.mock_upstream import MockUpstream

README = Path(__file__).resolve().parents[2] / "README.md"
RECIPE_PROXY = "http://10.0.0.5:8080"  # the address the README's recipe names

OPENAI_CALL = """
from openai import OpenAI
r = OpenAI().chat.completions.create(model="gpt-4o-mini",
                                     messages=[{"role": "user", "content": "hi"}])
print(r.choices[0].message.content)
"""


@dataclass
class Member:
    """Another machine: its own home, config directory and working directory."""

    home: Path
    cwd: Path

    @property
    def dir(self) -> Path:
        return self.home / ".config" / "llamakey"

    def environment(self, key: str | None = None) -> dict[str, str]:
        # What the member's shell has: none of the admin's settings, no provider keys or
        # proxies; PYTHONPATH stays, so the `lmk` under test is the tree under test.
        keep = {"PATH", "PYTHONPATH", "LANG", "LC_ALL", "TMPDIR"}
        env = {k: v for k, v in os.environ.items() if k in keep}
        env.update(HOME=str(self.home), XDG_CONFIG_HOME=str(self.home / ".config"))
        if key is not None:
            env["LMK_MASTER_KEY"] = key
        return env

    def lmk(self, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [LMK, *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.cwd,
            env=self.environment(key),
        )

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.home)) for p in self.home.rglob("*") if p.is_file())

    def run_sourced(self, env_file: Path, *command: str) -> subprocess.CompletedProcess[str]:
        """`command` in a fresh process whose environment is only what `env_file` sets."""
        script = '. "$1" && shift && exec "$@"'
        return subprocess.run(
            ["sh", "-c", script, "sh", str(env_file), *command],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.cwd,
            env={"PATH": os.environ["PATH"], "HOME": str(self.home)},
        )


@pytest.fixture
def member(tmp_path: Path) -> Member:
    home, cwd = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    cwd.mkdir()
    return Member(home, cwd)


def fingerprint_of(gateway: Gateway) -> str:
    """What the admin hands out: `lmk ca fingerprint` on the proxy's machine."""
    result = run_lmk(gateway.config, "ca", "fingerprint")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def proxy_url(gateway: Gateway) -> str:
    return f"http://127.0.0.1:{gateway.port}"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_onboarded(member: Member, gateway: Gateway) -> Path:
    """The three files, 0600, in the member's own config directory; the env file's path."""
    env_file = member.dir / "llamakey.env"
    names = [".config/llamakey/" + n for n in (ca.BUNDLE_FILE, "llamakey.env", ca.CA_CERT_FILE)]
    assert member.files() == names
    for name in names:
        assert mode(member.home / name) == 0o600, name
    ours = (gateway.workdir / "certs" / ca.CA_CERT_FILE).read_bytes()
    assert (member.dir / ca.CA_CERT_FILE).read_bytes() == ours
    bundle = (member.dir / ca.BUNDLE_FILE).read_bytes()
    assert bundle.count(b"BEGIN CERTIFICATE") > 10 and bundle.rstrip().endswith(ours.rstrip())
    return env_file


def sdk_call_through(member: Member, env_file: Path, mock: MockUpstream) -> None:
    mock.clear()
    result = member.run_sourced(env_file, sys.executable, "-c", OPENAI_CALL)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip(), "the SDK printed no answer"
    (seen,) = [s for s in mock.seen if s.host == "api.openai.com"]
    assert seen.header("authorization") == f"Bearer {REAL_KEYS['openai']}"


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmk: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def audit_rows(db: Path, where: str) -> list[dict[str, object]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(f"select * from requests where {where}")]


# --------------------------------------------------------------------------------------------
# lmk env --proxy


def test_a_member_onboards_with_the_fingerprint_and_an_sdk_call_goes_through(
    gateway: Gateway, mock: MockUpstream, member: Member
) -> None:
    fingerprint = fingerprint_of(gateway)
    key = gateway.keys["alice"]
    args = ("env", "--proxy", proxy_url(gateway), "--fingerprint", fingerprint)
    mock.clear()
    result = member.lmk(*args, key=key)
    assert result.returncode == 0, result.stderr
    assert mock.seen == [], "onboarding went upstream"
    print(f"$ lmk ca fingerprint        # the admin\n{fingerprint}")
    print(f"$ LMK_MASTER_KEY=lmk_… lmk {shlex.join(args)}\n{result.stdout}{result.stderr}")
    assert "WARNING" not in result.stderr and key not in result.stderr
    env_file = assert_onboarded(member, gateway)
    assert env_file.read_text() == result.stdout  # eval "$(lmk env --proxy …)" is the same
    exports = dict(
        line.removeprefix("export ").split("=", 1) for line in result.stdout.splitlines()
    )
    assert exports["HTTPS_PROXY"] == proxy_url(gateway)
    assert exports["SSL_CERT_FILE"] == str(member.dir / ca.BUNDLE_FILE)
    assert exports["OPENAI_API_KEY"] == key and exports["HF_TOKEN"] == "hf_" + key
    assert "@LMK_MASTER_KEY@" not in result.stdout
    sdk_call_through(member, env_file, mock)


def test_without_a_fingerprint_the_ca_is_trusted_on_first_use_loudly_then_pinned(
    gateway: Gateway, mock: MockUpstream, member: Member, tmp_path: Path
) -> None:
    fingerprint = fingerprint_of(gateway)
    key = gateway.keys["bob"]
    first = member.lmk("env", "--proxy", proxy_url(gateway), key=key)
    assert first.returncode == 0, first.stderr
    warnings = [line for line in first.stderr.splitlines() if "WARNING" in line]
    assert any("the proxy's CA is trusted on first use" in w for w in warnings), first.stderr
    assert any(fingerprint in w for w in warnings)
    env_file = assert_onboarded(member, gateway)

    again = member.lmk("env", "--proxy", proxy_url(gateway), key=key)
    assert again.returncode == 0 and "WARNING" not in again.stderr, again.stderr

    # The stored CA is the pin: a proxy showing another CA is refused, and nothing changes.
    other = tmp_path / "other-ca"
    ca.init_ca(other, ["api.openai.com"])
    (member.dir / ca.CA_CERT_FILE).write_bytes((other / ca.CA_CERT_FILE).read_bytes())
    before = {name: (member.home / name).read_bytes() for name in member.files()}
    refused = member.lmk("env", "--proxy", proxy_url(gateway), key=key)
    assert refused.returncode == 1
    assert "is not the one trusted before" in one_line(refused)
    assert refused.stdout == ""
    assert {name: (member.home / name).read_bytes() for name in member.files()} == before
    # ... unless the admin's fingerprint says this one is right.
    pinned = member.lmk("env", "--proxy", proxy_url(gateway), "--fingerprint", fingerprint, key=key)
    assert pinned.returncode == 0, pinned.stderr
    sdk_call_through(member, env_file, mock)


def test_a_wrong_fingerprint_writes_nothing(gateway: Gateway, member: Member) -> None:
    wrong = ":".join(["AB"] * 32)
    result = member.lmk(
        "env", "--proxy", proxy_url(gateway), "--fingerprint", wrong, key=gateway.keys["alice"]
    )
    print(f"$ lmk env --proxy {proxy_url(gateway)} --fingerprint {wrong}\n{result.stderr}")
    assert result.returncode == 1
    line = one_line(result)
    assert f"not the {wrong} you gave" in line and fingerprint_of(gateway) in line
    assert result.stdout == "" and member.files() == []


def test_a_wrong_key_is_a_401_in_one_line_audited_and_logged_without_the_key(
    gateway: Gateway, member: Member
) -> None:
    wrong = "lmk_" + "W" * 43
    before = {r["id"] for r in audit_rows(gateway.audit_db, "1 = 1")}
    result = member.lmk(
        "env", "--proxy", proxy_url(gateway), "--fingerprint", fingerprint_of(gateway), key=wrong
    )
    print(f"$ LMK_MASTER_KEY=lmk_WWW… lmk env --proxy {proxy_url(gateway)} …\n{result.stderr}")
    assert result.returncode == 1
    line = one_line(result)
    assert "refused the master key (401" in line and wrong not in line
    assert result.stdout == "" and member.files() == []

    def new_rows() -> list[dict[str, object]]:
        rows = audit_rows(gateway.audit_db, "completed_ts is not null")
        return [r for r in rows if r["id"] not in before]

    wait_until(new_rows, "the refusal's audit row")
    (row,) = new_rows()
    assert row["host"] == "lmk.invalid"
    assert (row["path"], row["status"], row["refused_by"]) == ("/env", 401, "unknown_master_key")
    assert row["user"] is None
    wait_until(lambda: "refused /env from 127.0.0.1" in gateway.log.read_text(), "the log line")
    stored = b"".join(p.read_bytes() for p in gateway.workdir.glob("audit.db*"))
    for place, content in (("audit database", stored), ("log", gateway.log.read_bytes())):
        assert wrong.encode() not in content and wrong[4:].encode() not in content, place


# --------------------------------------------------------------------------------------------
# The README's recipe: curl and openssl, no Python


def readme_recipe() -> list[str]:
    text = README.read_text()
    block = text.split("<!-- onboarding-recipe", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    lines = block.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith(f"P={RECIPE_PROXY} "), lines
    return lines


def test_the_readme_curl_recipe_onboards_a_member(
    gateway: Gateway, mock: MockUpstream, member: Member
) -> None:
    assign, get_ca, get_env = (
        line.replace(RECIPE_PROXY, proxy_url(gateway)) for line in readme_recipe()
    )
    env = member.environment(gateway.keys["alice"])

    def sh(line: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", "-c", f"{assign}\n{line}"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=member.cwd,
            env=env,
        )

    first = sh(get_ca)
    assert first.returncode == 0, first.stderr
    # What the member compares with the admin's fingerprint before the second line.
    assert first.stdout.strip().partition("=")[2] == fingerprint_of(gateway)
    second = sh(get_env)
    assert second.returncode == 0, second.stderr
    print(f"$ sh -c {shlex.quote(get_ca)}\n{first.stdout}$ sh -c {shlex.quote(get_env)}")

    env_file = member.dir / "llamakey.env"
    assert mode(env_file) == mode(member.dir / ca.BUNDLE_FILE) == 0o600
    text = env_file.read_text()
    assert f"export OPENAI_API_KEY={gateway.keys['alice']}\n" in text
    assert "@LMK_MASTER_KEY@" not in text
    # The same environment lmk env --proxy writes, only the CA's file mode aside.
    assert f"export SSL_CERT_FILE={member.dir / ca.BUNDLE_FILE}\n" in text
    sdk_call_through(member, env_file, mock)
    mock.clear()
    answer = member.run_sourced(
        env_file,
        "curl",
        "-sS",
        "https://api.openai.com/v1/chat/completions",
        "-H",
        f"authorization: Bearer {gateway.keys['alice']}",
        "-H",
        "content-type: application/json",
        "-d",
        '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}',
    )
    assert answer.returncode == 0 and '"choices"' in answer.stdout, answer.stderr
    assert mock.seen[0].header("authorization") == f"Bearer {REAL_KEYS['openai']}"


def test_the_recipe_with_a_wrong_key_writes_no_env_file(gateway: Gateway, member: Member) -> None:
    assign, get_ca, get_env = (
        line.replace(RECIPE_PROXY, proxy_url(gateway)) for line in readme_recipe()
    )
    result = subprocess.run(
        ["sh", "-c", f"{assign}\n{get_ca} >/dev/null\n{get_env}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=member.cwd,
        env=member.environment("lmk_" + "V" * 43),
    )
    assert result.returncode != 0
    assert "401" in result.stderr
    assert not (member.dir / "llamakey.env").exists()


# --------------------------------------------------------------------------------------------
# A locked-down proxy: other hosts blocked, proxy credentials required


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream) -> Iterator[Gateway]:
    gw = make_gateway(
        tmp_path_factory.mktemp("onboard-locked"),
        mock,
        proxy_table={"other_hosts": "block", "proxy_auth": True},
    )
    gw.start()
    yield gw
    gw.stop()


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"]}
    return subprocess.run(
        ["curl", "-sS", "--max-time", "20", *args], capture_output=True, text=True, env=env
    )


def test_a_locked_proxy_still_hands_out_its_ca_and_environment(
    locked: Gateway, mock: MockUpstream, member: Member
) -> None:
    proxy = proxy_url(locked)
    # The CA is public: no credentials, no 407, and not blocked.
    pem = curl("-x", proxy, "-w", "%{http_code}", "http://lmk.invalid/ca.pem")
    assert pem.stdout.endswith("200"), pem.stdout + pem.stderr
    assert (
        pem.stdout.removesuffix("200") == (locked.workdir / "certs" / ca.CA_CERT_FILE).read_text()
    )
    shown = curl("-x", proxy, "http://lmk.invalid/fingerprint")
    assert shown.stdout.strip() == fingerprint_of(locked)
    # A tunnel to the onboarding name is refused; another host is still blocked.
    tunnel = curl("-x", proxy, "https://lmk.invalid/ca.pem")
    assert tunnel.returncode != 0 and "403" in tunnel.stderr
    other = curl("-x", proxy, "-o", "/dev/null", "-w", "%{http_code}", "http://example.com/")
    assert other.stdout == "403"

    key = locked.keys["alice"]
    result = member.lmk(
        "env", "--proxy", proxy, "--fingerprint", fingerprint_of(locked), "alice", key=key
    )
    assert result.returncode == 0, result.stderr
    assert f"export HTTPS_PROXY=http://alice:{key}@127.0.0.1:{locked.port}\n" in result.stdout
    sdk_call_through(member, assert_onboarded(member, locked), mock)

    # Another user's key under NAME: refused, nothing written.
    mismatch = Member(member.home.parent / "home2", member.cwd)
    mismatch.home.mkdir()
    refused = mismatch.lmk("env", "--proxy", proxy, "bob", key=key)
    assert refused.returncode == 1
    assert "master key of 'alice', not of 'bob'" in one_line(refused)
    assert mismatch.files() == []


def test_env_refuses_a_disabled_or_unknown_key_on_a_locked_proxy(locked: Gateway) -> None:
    for key in ("lmk_" + "U" * 43, None):
        headers = ["-H", f"authorization: Bearer {key}"] if key else []
        answer = curl(
            "-x",
            proxy_url(locked),
            *headers,
            "-w",
            "\n%{http_code}",
            "http://lmk.invalid/env?dir=/home/x",
        )
        body, _, status = answer.stdout.rpartition("\n")
        assert status == "401", answer.stdout
        assert "export" not in body and re.fullmatch(r"LlaMaKey: [^\n]+\n?", body), body
