"""`lmk env`: the client environment, printed and written 0600.

What it must never do: put the key where others can read it (a planted symlink's target, a
world-readable file, its own arguments), or make clients trust a CA the proxy does not use.
"""

from __future__ import annotations

import io
import os
import select
import shlex
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import llamakey
from llamakey import ca
from llamakey.cli import env as env_command
from tests.harness import LMK
from tests.unit.cli.helpers import CLIENT_VARS, SDK_KEY_VARS, exports, lmk, lmk_fails, new_key

ADDONS = Path(llamakey.__file__).resolve().parents[1]  # the tree under test, for subprocesses


@pytest.fixture
def ca_ready(cfg: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """The CA and client bundle, made the way an admin does (`lmk ca init`); the certs dir."""
    assert lmk(cfg, "ca", "init") == 0
    capsys.readouterr()
    return cfg.parent / "certs"


def use_key(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    monkeypatch.setenv("LMK_MASTER_KEY", key)


def stderr_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


# --------------------------------------------------------------------------------------------
# What it prints and writes
# --------------------------------------------------------------------------------------------


def test_env_prints_and_writes_the_client_environment(
    cfg: Path,
    ca_ready: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = new_key(cfg, capsys, "alice", "research")
    use_key(monkeypatch, key)
    output = tmp_path / "alice.env"
    assert lmk(cfg, "env", "alice", "--output", str(output)) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert captured.err == f"# also written to {output} (mode 0600)\n"
    env = exports(out)
    assert set(CLIENT_VARS) <= set(env)

    assert env["HTTPS_PROXY"] == env["https_proxy"] == "http://127.0.0.1:8080"
    bundle = ca_ready / ca.BUNDLE_FILE
    for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "AWS_CA_BUNDLE"):
        assert env[var] == str(bundle)
    assert env["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] == str(bundle)
    assert b"BEGIN CERTIFICATE" in bundle.read_bytes()
    assert env["NODE_EXTRA_CA_CERTS"] == str(ca_ready / ca.CA_CERT_FILE)
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


def test_env_sets_one_google_key_variable_the_one_google_genai_reads(
    cfg: Path,
    ca_ready: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # google-genai prefers GOOGLE_API_KEY, and logs "Both GOOGLE_API_KEY and GEMINI_API_KEY are
    # set" on every client made while both are.
    key = new_key(cfg, capsys, "alice")
    use_key(monkeypatch, key)
    assert lmk(cfg, "env", "alice", "--output", str(tmp_path / "alice.env")) == 0
    env = exports(capsys.readouterr().out)
    assert env["GOOGLE_API_KEY"] == key
    assert "GEMINI_API_KEY" not in env


def test_env_with_proxy_auth_puts_credentials_in_the_proxy_url(
    cfg: Path,
    ca_ready: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text.replace("proxy_auth = false", "proxy_auth = true", 1), encoding="utf-8")
    key = new_key(cfg, capsys, "alice")
    use_key(monkeypatch, key)
    assert lmk(cfg, "env", "alice", "--output", str(tmp_path / "e")) == 0
    env = exports(capsys.readouterr().out)
    assert env["HTTPS_PROXY"] == f"http://alice:{key}@127.0.0.1:8080"
    url = urlsplit(env["https_proxy"])
    assert (url.username, url.password, url.hostname, url.port) == ("alice", key, "127.0.0.1", 8080)


def test_env_proxy_host(
    cfg: Path,
    ca_ready: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = cfg.read_text(encoding="utf-8")
    text = text.replace('listen_host = "127.0.0.1"', 'listen_host = "0.0.0.0"')
    # off loopback the proxy must not be open: "block" (or proxy_auth) is required
    cfg.write_text(text.replace('other_hosts = "tunnel"', 'other_hosts = "block"'), "utf-8")
    key = new_key(cfg, capsys, "alice")
    # hf_-prefixed key (as copied from HF_TOKEN) is the same master key
    use_key(monkeypatch, "hf_" + key)
    assert lmk(cfg, "env", "alice", "--output", str(tmp_path / "a")) == 0
    env = exports(capsys.readouterr().out)
    assert env["HTTPS_PROXY"] == "http://127.0.0.1:8080"  # 0.0.0.0 is not dialable
    assert env["OPENAI_API_KEY"] == key
    args = ("env", "alice", "--proxy-host", "gw.lan", "--output", str(tmp_path / "b"))
    assert lmk(cfg, *args) == 0
    assert exports(capsys.readouterr().out)["HTTPS_PROXY"] == "http://gw.lan:8080"


def test_env_refuses_another_users_key(
    cfg: Path,
    ca_ready: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    new_key(cfg, capsys, "alice")
    bob = new_key(cfg, capsys, "bob")
    output = tmp_path / "alice.env"
    use_key(monkeypatch, bob)
    message = lmk_fails(cfg, "env", "alice", "--output", str(output))
    assert message.startswith("lmk: that is not the master key of 'alice'")
    assert "lmk keys new alice" in message and "\n" not in message
    assert bob not in message
    assert not output.exists()
    assert bob not in capsys.readouterr().out
    use_key(monkeypatch, "lmk_x")
    assert "not the master key" in lmk_fails(cfg, "env", "alice", "--output", "o")


# --------------------------------------------------------------------------------------------
# 1. The file: never written through a symlink, always a fresh 0600 file
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("planted", ["their-file", "dangling", "directory"])
def test_env_replaces_a_planted_symlink_and_never_writes_through_it(
    cfg: Path,
    ca_ready: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    planted: str,
) -> None:
    """Another user pre-creates llamakey_local.env -> a file they read: they get nothing."""
    key = new_key(cfg, capsys, "alice")
    use_key(monkeypatch, key)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    target = theirs / "loot"
    if planted == "their-file":
        target.write_text("their content\n")
        target.chmod(0o644)
    elif planted == "directory":
        target.mkdir()
    output = tmp_path / "llamakey_local.env"
    output.symlink_to(target)

    assert lmk(cfg, "env", "alice") == 0  # the default output, in the working directory
    assert capsys.readouterr().err == "# also written to llamakey_local.env (mode 0600)\n"

    assert not output.is_symlink()
    info = output.lstat()
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert key in output.read_text()
    if planted == "their-file":
        assert target.read_text() == "their content\n"
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
    elif planted == "directory":
        assert list(target.iterdir()) == []
    else:
        assert not target.exists()
    assert sorted(p.name for p in theirs.iterdir()) == ([] if planted == "dangling" else ["loot"])
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_env_replaces_an_existing_world_readable_file_by_a_new_0600_one(
    cfg: Path,
    ca_ready: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = new_key(cfg, capsys, "alice")
    use_key(monkeypatch, key)
    output = tmp_path / "llamakey_local.env"
    output.write_text("# old\n")
    output.chmod(0o644)
    # A hard link someone kept to the old file must not receive the key either.
    kept = tmp_path / "kept-link"
    os.link(output, kept)
    assert lmk(cfg, "env", "alice", "--output", str(output)) == 0
    assert key in output.read_text()
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    assert not output.samefile(kept)
    assert kept.read_text() == "# old\n"


def test_env_refuses_a_directory_as_its_output(
    cfg: Path,
    ca_ready: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = new_key(cfg, capsys, "alice")
    use_key(monkeypatch, key)
    output = tmp_path / "somedir"
    output.mkdir()
    message = lmk_fails(cfg, "env", "alice", "--output", str(output))
    assert message == f"lmk: {output} is a directory: give another file with --output"
    assert list(output.iterdir()) == []
    assert key not in capsys.readouterr().out


def test_env_leaves_no_temporary_file_and_the_old_file_when_writing_fails(
    cfg: Path,
    ca_ready: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = new_key(cfg, capsys, "alice")
    use_key(monkeypatch, key)
    output = tmp_path / "llamakey_local.env"
    output.write_text("# old\n")
    before = sorted(p.name for p in tmp_path.iterdir())

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    message = lmk_fails(cfg, "env", "alice", "--output", str(output))
    monkeypatch.undo()
    assert message.startswith(f"lmk: cannot write {output}: No space left on device")
    assert "--output" in message and "\n" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert output.read_text() == "# old\n"
    assert key not in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# 2. The key: from the environment or a prompt, never from argv
# --------------------------------------------------------------------------------------------


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def never_prompt(prompt: str) -> str:
    raise AssertionError("prompted although the key was given")


def test_the_key_comes_from_the_environment_first() -> None:
    got = env_command.read_master_key(
        "alice", {"LMK_MASTER_KEY": "lmk_abc\n"}, FakeTerminal(), never_prompt
    )
    assert got == "lmk_abc"


def test_in_a_terminal_the_key_is_asked_for_by_name() -> None:
    asked: list[str] = []

    def typed(prompt: str) -> str:
        asked.append(prompt)
        return " lmk_typed "

    assert env_command.read_master_key("alice", {}, FakeTerminal(), typed) == "lmk_typed"
    assert asked == ["master key of alice: "]


@pytest.mark.parametrize("answer", ["", "EOF"])
def test_an_empty_answer_at_the_prompt_is_a_usage_error(
    answer: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def typed(prompt: str) -> str:
        if answer == "EOF":
            raise EOFError
        return answer

    with pytest.raises(SystemExit) as caught:
        env_command.read_master_key("alice", {}, FakeTerminal(), typed)
    assert caught.value.code == 2
    (line,) = stderr_lines(capsys)
    assert line.startswith("lmk: no master key typed") and "LMK_MASTER_KEY=" in line


def test_without_the_variable_or_a_terminal_it_says_how_to_give_the_key(
    cfg: Path,
    ca_ready: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    new_key(cfg, capsys, "alice")
    monkeypatch.setattr(sys, "stdin", io.StringIO("lmk_not_read\n"))
    with pytest.raises(SystemExit) as caught:
        lmk(cfg, "env", "alice")
    assert caught.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "lmk: no master key: give it as LMK_MASTER_KEY=lmk_... lmk env alice,"
        " or run it in a terminal to be prompted\n"
    )
    assert not (tmp_path / "llamakey_local.env").exists()


def test_the_key_option_is_undocumented_and_warns_that_argv_is_public(
    cfg: Path,
    ca_ready: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        lmk(cfg, "env", "--help")
    help_text = capsys.readouterr().out
    assert "--key" not in help_text and "LMK_MASTER_KEY" in help_text

    key = new_key(cfg, capsys, "alice")
    assert lmk(cfg, "env", "alice", "--key", key, "--output", str(tmp_path / "e")) == 0
    captured = capsys.readouterr()
    assert exports(captured.out)["OPENAI_API_KEY"] == key
    warning, written = captured.err.splitlines()
    assert warning.startswith("lmk: warning: --key puts the master key in this process's argu")
    assert "every local user can read" in warning and "LMK_MASTER_KEY=" in warning
    assert written.startswith("# also written to")


def start_lmk(
    args: list[str],
    cwd: Path,
    *,
    key: str | None = None,
    stdin: int = subprocess.DEVNULL,
    stdout: int = subprocess.PIPE,
    start_new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start `args` on the tree under test, with the master key (if any) in its environment."""
    environ = {k: v for k, v in os.environ.items() if k != "LMK_MASTER_KEY"}
    environ["PYTHONPATH"] = os.pathsep.join([str(ADDONS), os.environ.get("PYTHONPATH", "")])
    if key is not None:
        environ["LMK_MASTER_KEY"] = key
    return subprocess.Popen(
        args,
        env=environ,
        cwd=cwd,
        stdin=stdin,
        stdout=stdout,
        stderr=subprocess.PIPE,
        start_new_session=start_new_session,
    )


def test_a_running_lmk_env_carries_the_key_in_its_environment_not_its_arguments(
    cfg: Path, ca_ready: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = new_key(cfg, capsys, "alice")
    args = [LMK, "--config", str(cfg), "env", "alice"]
    process = start_lmk(args, tmp_path, key=key)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert exports(out.decode())["OPENAI_API_KEY"] == key
    assert not any(key in arg for arg in args)  # what /proc/PID/cmdline shows


def test_without_a_key_or_terminal_the_command_exits_2_with_one_line(
    cfg: Path, ca_ready: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new_key(cfg, capsys, "alice")
    process = start_lmk([LMK, "--config", str(cfg), "env", "alice"], tmp_path)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert out == b""
    (line,) = err.decode().splitlines()
    assert line.startswith("lmk: no master key: give it as LMK_MASTER_KEY=lmk_... lmk env alice")
    assert not (tmp_path / "llamakey_local.env").exists()


def _read_terminal(master: int, until: bytes | None, timeout: float = 30) -> bytes:
    """What the terminal shows: read `master` until `until` appears (or, if None, until EOF)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while until is None or until not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {until!r} on the terminal; saw {seen!r}"
        ready, _, _ = select.select([master], [], [], left)
        if not ready:
            continue
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: every slave end is closed
            break
        if not chunk:
            break
        seen += chunk
    return seen


# Run by the child: make the pty on stdin its controlling terminal (as a login shell's is), so
# getpass talks to /dev/tty, then run `lmk` from the tree under test.
_CHILD = (
    "import contextlib, fcntl, sys, termios\n"
    "with contextlib.suppress(OSError):\n"
    "    fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
    "from llamakey.cli import main\n"
    "sys.exit(main())\n"
)


def test_in_a_terminal_it_prompts_for_the_key_without_echoing_it(
    cfg: Path, ca_ready: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = new_key(cfg, capsys, "alice")
    master, slave = os.openpty()
    try:
        args = [sys.executable, "-c", _CHILD, "--config", str(cfg), "env", "alice"]
        process = start_lmk(args, tmp_path, stdin=slave, start_new_session=True)
        os.close(slave)
        shown = _read_terminal(master, b"master key of alice: ")
        os.write(master, key.encode() + b"\n")
        out, err = process.communicate(timeout=60)
        shown += _read_terminal(master, None)
    finally:
        os.close(master)
    assert process.returncode == 0, err
    assert key not in shown.decode(errors="replace")  # not echoed
    assert exports(out.decode())["OPENAI_API_KEY"] == key
    assert key in (tmp_path / "llamakey_local.env").read_text()
    assert not any(key in arg for arg in args)


# --------------------------------------------------------------------------------------------
# 3. The CA: used, never created
# --------------------------------------------------------------------------------------------


def test_env_never_creates_a_ca(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_key(cfg, capsys, "alice")
    use_key(monkeypatch, key)
    certs = tmp_path / "certs"
    message = lmk_fails(cfg, "env", "alice")
    assert message.startswith("lmk: no CA yet (")
    assert "run `lmk ca init`, or start the proxy once (`lmk serve`)" in message
    assert "\n" not in message
    assert not certs.exists() or list(certs.iterdir()) == []
    assert not (tmp_path / "llamakey_local.env").exists()
    assert key not in capsys.readouterr().out


@pytest.mark.parametrize("broken", ["no-bundle", "no-ca-cert", "bundle-of-another-ca"])
def test_env_refuses_a_bundle_that_is_not_the_proxys_ca(
    cfg: Path,
    ca_ready: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    broken: str,
) -> None:
    key = new_key(cfg, capsys, "alice")
    use_key(monkeypatch, key)
    if broken == "no-bundle":
        (ca_ready / ca.BUNDLE_FILE).unlink()
    elif broken == "no-ca-cert":
        (ca_ready / ca.CA_CERT_FILE).unlink()
    else:  # the CA was re-issued but an old bundle was copied back
        old_bundle = (ca_ready / ca.BUNDLE_FILE).read_bytes()
        assert lmk(cfg, "ca", "init", "--force") == 0
        capsys.readouterr()
        (ca_ready / ca.BUNDLE_FILE).write_bytes(old_bundle)
    before = {p.name: p.read_bytes() for p in ca_ready.iterdir()}
    message = lmk_fails(cfg, "env", "alice")
    assert "run `lmk ca init`, or start the proxy once (`lmk serve`)" in message
    assert "\n" not in message
    assert {p.name: p.read_bytes() for p in ca_ready.iterdir()} == before  # nothing made
    assert not (tmp_path / "llamakey_local.env").exists()


# --------------------------------------------------------------------------------------------
# 4. A reader that stops early
# --------------------------------------------------------------------------------------------


def test_env_into_a_closed_pipe_exits_quietly(
    cfg: Path, ca_ready: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = new_key(cfg, capsys, "alice")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before anything is written: EPIPE
    try:
        args = [LMK, "--config", str(cfg), "env", "alice"]
        process = start_lmk(args, tmp_path, key=key, stdout=write_end)
    finally:
        os.close(write_end)
    _, err = process.communicate(timeout=60)
    assert err.decode() == "# also written to llamakey_local.env (mode 0600)\n"
    assert process.returncode == 0
    assert key in (tmp_path / "llamakey_local.env").read_text()


def test_env_piped_into_head_shows_one_line_and_no_traceback(
    cfg: Path, ca_ready: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = new_key(cfg, capsys, "alice")
    command = f"{shlex.quote(LMK)} --config {shlex.quote(str(cfg))} env alice | head -1"
    process = start_lmk(["bash", "-o", "pipefail", "-c", command], tmp_path, key=key)
    out, err = process.communicate(timeout=60)
    assert out.decode() == "export HTTPS_PROXY=http://127.0.0.1:8080\n"
    assert err.decode() == "# also written to llamakey_local.env (mode 0600)\n"
    assert process.returncode == 0
