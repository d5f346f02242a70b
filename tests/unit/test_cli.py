"""`lmk` run in-process against a temporary copy of the shipped lmk_config.toml."""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from llamakey import ca, config
from llamakey.cli import main
from llamakey.providers import BUILTIN_PROVIDERS

SHIPPED = Path(__file__).resolve().parents[2] / "lmk_config.toml"

CLIENT_VARS = (
    "HTTPS_PROXY",
    "https_proxy",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "AWS_CA_BUNDLE",
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
    "NODE_EXTRA_CA_CERTS",
    "NODE_USE_ENV_PROXY",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "CO_API_KEY",
    "HF_TOKEN",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "MISTRAL_API_KEY",
    "GROQ_API_KEY",
)
SDK_KEY_VARS = tuple(v for v in CLIENT_VARS if v.endswith(("_API_KEY", "_TOKEN")))


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped configuration, with no provider key in the environment."""
    for provider in BUILTIN_PROVIDERS.values():
        for var in provider.key_env:
            monkeypatch.delenv(var, raising=False)
    for var in ("VECTARA_CUSTOMER_ID", "LMK_MASTER_KEY", "LMK_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "lmk_config.toml"
    shutil.copyfile(SHIPPED, path)
    return path


def lmk(path: Path, *args: str) -> int:
    return int(main(["--config", str(path), *args]))


def lmk_fails(path: Path, *args: str) -> str:
    """Run a command that must fail; return its error message."""
    with pytest.raises(SystemExit) as caught:
        lmk(path, *args)
    assert caught.value.code not in (0, None)
    return str(caught.value.code)


def new_key(path: Path, capsys: pytest.CaptureFixture[str], name: str, *groups: str) -> str:
    group_args = [a for g in groups for a in ("--group", g)]
    assert lmk(path, "keys", "new", name, *group_args) == 0
    key = capsys.readouterr().out.strip()
    assert re.fullmatch(r"lmk_[A-Za-z0-9_-]{43}", key), key
    return key


def comments(text: str) -> list[str]:
    """Every comment of a TOML file in order (the shipped file has no '#' inside strings)."""
    return [line[line.index("#") :].rstrip() for line in text.splitlines() if "#" in line]


def is_subsequence(lines: list[str], within: list[str]) -> bool:
    rest = iter(within)
    return all(line in rest for line in lines)


def exports(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in text.splitlines():
        assert line.startswith("export "), line
        name, _, value = line.removeprefix("export ").partition("=")
        (env[name],) = shlex.split(value)
    return env


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# keys new / list / revoke


def test_keys_new_prints_key_once_and_stores_only_its_hash(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = cfg.read_text(encoding="utf-8")
    assert lmk(cfg, "keys", "new", "alice", "--group", "research") == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert re.fullmatch(r"lmk_[A-Za-z0-9_-]{43}", key)
    assert out == key + "\n"  # the key alone on stdout: `KEY=$(lmk keys new alice)` works
    assert key not in err
    assert "lmk env alice" in err

    text = cfg.read_text(encoding="utf-8")
    assert key not in text
    assert key[4:] not in text
    data = tomllib.loads(text)
    assert data["users"]["alice"] == {"key_sha256": sha256(key), "groups": ["research"]}
    assert data["groups"]["research"] == {}

    # Every comment, and every original line, is still there in order.
    assert len(comments(original)) > 10  # the shipped file is documented inline
    assert comments(text) == comments(original)
    assert is_subsequence(original.splitlines(), text.splitlines())

    # The proxy accepts the file, and the key is alice's.
    settings = config.load(cfg)
    user = settings.users_by_hash[sha256(key)]
    assert (user.name, user.groups, user.disabled) == ("alice", ("research",), False)


def test_keys_new_twice_fails_and_keeps_the_file(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new_key(cfg, capsys, "alice", "research")
    before = cfg.read_bytes()
    message = lmk_fails(cfg, "keys", "new", "alice")
    assert "users.alice exists" in message
    assert cfg.read_bytes() == before
    assert capsys.readouterr().out == ""  # no second key printed


def test_keys_new_each_user_gets_a_distinct_key(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = new_key(cfg, capsys, "alice", "research")
    bob = new_key(cfg, capsys, "bob", "ops", "research")
    assert alice != bob
    data = tomllib.loads(cfg.read_text(encoding="utf-8"))
    assert data["users"]["bob"] == {"key_sha256": sha256(bob), "groups": ["ops", "research"]}
    assert set(data["groups"]) == {"research", "ops"}
    carol = new_key(cfg, capsys, "carol")
    assert "groups" not in tomllib.loads(cfg.read_text(encoding="utf-8"))["users"]["carol"]
    assert len(config.load(cfg).users_by_hash) == 3
    assert len({alice, bob, carol}) == 3


def test_keys_list_and_revoke(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    original = cfg.read_text(encoding="utf-8")
    alice = new_key(cfg, capsys, "alice", "research")
    new_key(cfg, capsys, "bob")

    assert lmk(cfg, "keys", "list") == 0
    out = capsys.readouterr().out
    (alice_line,) = [line for line in out.splitlines() if line.startswith("alice ")]
    assert "active" in alice_line
    assert "research" in alice_line
    assert sha256(alice)[:12] in alice_line
    assert alice not in out
    assert any(line.startswith("bob ") for line in out.splitlines())

    assert lmk(cfg, "keys", "revoke", "alice") == 0
    assert "revoked alice" in capsys.readouterr().out
    text = cfg.read_text(encoding="utf-8")
    assert "alice" not in tomllib.loads(text)["users"]
    assert sha256(alice) not in text
    assert comments(text) == comments(original)
    assert sha256(alice) not in config.load(cfg).users_by_hash

    assert lmk(cfg, "keys", "list") == 0
    out = capsys.readouterr().out
    assert not any(line.startswith("alice ") for line in out.splitlines())
    assert any(line.startswith("bob ") for line in out.splitlines())

    assert "no user 'alice'" in lmk_fails(cfg, "keys", "revoke", "alice")


# --------------------------------------------------------------------------------------------
# check


def test_check_summarises_a_valid_file(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = "sk-proj-CLIcheckKEY0123456789abcdefghij"
    monkeypatch.setenv("OPENAI_API_KEY", real)
    assert lmk(cfg, "check") == 0
    out = capsys.readouterr().out
    assert f"{cfg.resolve()}: valid" in out
    lines = out.splitlines()
    for name in BUILTIN_PROVIDERS:
        assert any(line.split()[:1] == [name] for line in lines), name
    (openai,) = [line for line in lines if line.split()[:1] == ["openai"]]
    assert "api.openai.com" in openai and "1 key(s)" in openai
    (groq,) = [line for line in lines if line.split()[:1] == ["groq"]]
    assert "NO KEY" in groq and "GROQ_API_KEY" in groq
    assert real not in out


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("listen_port = 8080", 'listen_port = "eighty"', ["proxy.listen_port", "'eighty'"]),
        ("retention_days = 0", "retention_days = 0\nbogus = 1", ["audit.bogus", "unknown key"]),
        ('other_hosts = "tunnel"', 'other_hosts = "deny"', ["proxy.other_hosts", "'deny'"]),
        ("[users]", "[users]\nalice = 3", ["users.alice"]),
        ("[proxy]", "[proxy", ["not valid TOML"]),
    ],
)
def test_check_broken_file_fails_naming_the_toml_path(
    cfg: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, expected: list[str]
) -> None:
    text = cfg.read_text(encoding="utf-8")
    assert old in text
    cfg.write_text(text.replace(old, new, 1), encoding="utf-8")
    message = lmk_fails(cfg, "check")
    assert str(cfg) in message
    for part in expected:
        assert part in message
    assert "valid\n" not in capsys.readouterr().out


def test_check_never_prints_a_master_key_pasted_as_provider_key(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = new_key(cfg, capsys, "alice")
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text.replace('keys = ["${OPENAI_API_KEY}"]', f'keys = ["{key}"]'), "utf-8")
    assert lmk(cfg, "check") == 0
    out = capsys.readouterr().out
    assert "master key" in out
    assert key not in out


# --------------------------------------------------------------------------------------------
# env


def test_env_prints_and_writes_the_client_environment(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = new_key(cfg, capsys, "alice", "research")
    output = tmp_path / "alice.env"
    assert lmk(cfg, "env", "alice", "--key", key, "--output", str(output)) == 0
    out = capsys.readouterr().out
    env = exports(out)
    assert set(CLIENT_VARS) <= set(env)

    assert env["HTTPS_PROXY"] == env["https_proxy"] == "http://127.0.0.1:8080"
    bundle = tmp_path / "certs" / ca.BUNDLE_FILE
    for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "AWS_CA_BUNDLE"):
        assert env[var] == str(bundle)
    assert env["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] == str(bundle)
    assert b"BEGIN CERTIFICATE" in bundle.read_bytes()
    assert env["NODE_EXTRA_CA_CERTS"] == str(tmp_path / "certs" / ca.CA_CERT_FILE)
    assert Path(env["NODE_EXTRA_CA_CERTS"]).is_file()
    assert env["NODE_USE_ENV_PROXY"] == "1"
    for var in SDK_KEY_VARS:
        assert env[var] == ("hf_" + key if var == "HF_TOKEN" else key), var

    assert output.read_text() == out
    assert stat.S_IMODE(output.stat().st_mode) == 0o600

    # The file is what a shell sources.
    shown = subprocess.run(
        [
            "bash",
            "-c",
            f'. {shlex.quote(str(output))} && printf "%s|%s" "$HTTPS_PROXY" "$HF_TOKEN"',
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert shown == f"http://127.0.0.1:8080|hf_{key}"


def test_env_with_proxy_auth_puts_credentials_in_the_proxy_url(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text.replace("proxy_auth = false", "proxy_auth = true", 1), encoding="utf-8")
    key = new_key(cfg, capsys, "alice")
    assert lmk(cfg, "env", "alice", "--key", key, "--output", str(tmp_path / "e")) == 0
    env = exports(capsys.readouterr().out)
    assert env["HTTPS_PROXY"] == f"http://alice:{key}@127.0.0.1:8080"
    url = urlsplit(env["https_proxy"])
    assert (url.username, url.password, url.hostname, url.port) == ("alice", key, "127.0.0.1", 8080)


def test_env_proxy_host(cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text.replace('listen_host = "127.0.0.1"', 'listen_host = "0.0.0.0"'), "utf-8")
    key = new_key(cfg, capsys, "alice")
    # hf_-prefixed key (as copied from HF_TOKEN) is the same master key
    assert lmk(cfg, "env", "alice", "--key", "hf_" + key, "--output", str(tmp_path / "a")) == 0
    env = exports(capsys.readouterr().out)
    assert env["HTTPS_PROXY"] == "http://127.0.0.1:8080"  # 0.0.0.0 is not dialable
    assert env["OPENAI_API_KEY"] == key
    args = ("env", "alice", "--key", key, "--proxy-host", "gw.lan", "--output", str(tmp_path / "b"))
    assert lmk(cfg, *args) == 0
    assert exports(capsys.readouterr().out)["HTTPS_PROXY"] == "http://gw.lan:8080"


def test_env_refuses_another_users_key(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new_key(cfg, capsys, "alice")
    bob = new_key(cfg, capsys, "bob")
    output = tmp_path / "alice.env"
    message = lmk_fails(cfg, "env", "alice", "--key", bob, "--output", str(output))
    assert "not the master key of 'alice'" in message
    assert bob not in message
    assert not output.exists()
    assert bob not in capsys.readouterr().out
    assert "master key" in lmk_fails(cfg, "env", "alice", "--output", str(output))
    assert "not the master key" in lmk_fails(cfg, "env", "alice", "--key", "lmk_x", "--output", "o")


def test_env_output_is_0600_even_when_file_existed(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = new_key(cfg, capsys, "alice")
    output = tmp_path / "llamakey_local.env"
    output.write_text("# old\n")
    output.chmod(0o644)
    assert lmk(cfg, "env", "alice", "--key", key, "--output", str(output)) == 0
    assert key in output.read_text()
    assert stat.S_IMODE(output.stat().st_mode) == 0o600


# --------------------------------------------------------------------------------------------
# ca init


def test_ca_init_creates_certs_with_private_key_0600(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = tmp_path / "certs"
    assert not certs.exists()
    assert lmk(cfg, "ca", "init") == 0
    out = capsys.readouterr().out
    assert str(certs / ca.CA_CERT_FILE) in out
    assert str(certs / ca.BUNDLE_FILE) in out
    assert stat.S_IMODE((certs / ca.CA_KEY_FILE).stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in (certs / ca.CA_KEY_FILE).read_bytes()
    assert b"PRIVATE KEY" not in (certs / ca.CA_CERT_FILE).read_bytes()
    assert b"PRIVATE KEY" not in (certs / ca.BUNDLE_FILE).read_bytes()
    assert stat.S_IMODE(certs.stat().st_mode) == 0o700
    assert ca.uncovered_hosts(certs, config.load(cfg).index.host_patterns()) == []

    # Idempotent: the same CA stays; check now reports it.
    cert = (certs / ca.CA_CERT_FILE).read_bytes()
    assert lmk(cfg, "ca", "init") == 0
    assert (certs / ca.CA_CERT_FILE).read_bytes() == cert
    capsys.readouterr()
    assert lmk(cfg, "check") == 0
    assert f"CA: {certs} (ok)" in capsys.readouterr().out


def test_check_says_when_the_ca_no_longer_fits_the_providers(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lmk(cfg, "ca", "init") == 0
    with cfg.open("a") as handle:
        handle.write('\n[providers.newco]\nhosts = ["api.newco.example"]\n')
    capsys.readouterr()
    assert lmk(cfg, "check") == 1
    out = capsys.readouterr().out
    assert "does not cover api.newco.example" in out
    assert "lmk ca init --force" in out
    assert lmk(cfg, "ca", "init", "--force") == 0
    capsys.readouterr()
    assert lmk(cfg, "check") == 0
    assert "(ok)" in capsys.readouterr().out
