"""`lmk env`: the client environment, printed and written 0600."""

from __future__ import annotations

import shlex
import stat
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from llamakey import ca
from tests.unit.cli.helpers import CLIENT_VARS, SDK_KEY_VARS, exports, lmk, lmk_fails, new_key


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
    text = text.replace('listen_host = "127.0.0.1"', 'listen_host = "0.0.0.0"')
    # off loopback the proxy must not be open: "block" (or proxy_auth) is required
    cfg.write_text(text.replace('other_hosts = "tunnel"', 'other_hosts = "block"'), "utf-8")
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
