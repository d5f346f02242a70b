"""Every documented mistake, made with the real `lmk`: one line ``lmk: …`` on stderr saying what
to do, status 2 for a usage error and 1 for a failure, never a traceback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import LMK, free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Mistake:
    """One mistake: the command line after ``--config``, what to set up first, and what the
    one line must say (``{config}``, ``{dir}``, ``{port}`` filled in)."""

    name: str
    args: tuple[str, ...]
    status: int
    says: tuple[str, ...]
    setup: Callable[[Path], object] | None = None
    config: str | None = None  # another --config, relative to the test's directory


def _break_config(directory: Path) -> None:
    path = directory / "lmk_config.toml"
    text = path.read_text(encoding="utf-8")
    old = 'other_hosts = "tunnel"'
    assert old in text
    path.write_text(text.replace(old, 'other_hosts = "deny"\nbogus = 1'), encoding="utf-8")


def _not_a_database(directory: Path) -> None:
    (directory / "lmk_audit.db").write_text("not a database\n" * 50, encoding="utf-8")


def _file_for_certs(directory: Path) -> None:
    (directory / "certs").write_text("a file where the CA directory goes\n", encoding="utf-8")


# The mistakes of the commands this suite's owners wrote (serve, web, check, usage).
MISTAKES = [
    Mistake(
        "usage --since yesterday",
        ("usage", "--since", "yesterday"),
        2,
        ("lmk: --since 'yesterday' is not a time: use 7d, 24h, 30m or an ISO date",),
    ),
    Mistake(
        "usage without a database",
        ("usage",),
        1,
        (
            "lmk: no audit database at {dir}/lmk_audit.db yet",
            "the proxy creates it on its first start",
        ),
    ),
    Mistake(
        "usage of a file that is no database",
        ("usage",),
        1,
        ("lmk: cannot read the audit database {dir}/lmk_audit.db",),
        setup=_not_a_database,
    ),
    Mistake(
        "serve on a taken port",
        ("serve",),
        1,
        ("lmk: port {port} is already in use", "proxy.listen_port in {config}"),
        setup=lambda d: "listen",
    ),
    Mistake(
        "web on a taken UI port",
        ("web",),
        1,
        ("lmk: port {port} is already in use", "proxy.web_port in {config}"),
        setup=lambda d: "web",
    ),
    Mistake(
        "a config path that does not exist",
        ("check",),
        1,
        ("lmk: {dir}/nowhere.toml: no such file",),
        config="nowhere.toml",
    ),
    Mistake(
        "serve on a config path that does not exist",
        ("serve",),
        1,
        ("lmk: {dir}/nowhere.toml: no such file",),
        config="nowhere.toml",
    ),
    Mistake(
        "an invalid config",
        ("check",),
        1,
        ("invalid configuration", "proxy.other_hosts: got 'deny'", "proxy.bogus: got 1, unknown"),
        setup=_break_config,
    ),
    Mistake(
        "serve on an invalid config",
        ("serve",),
        1,
        ("invalid configuration", "proxy.other_hosts: got 'deny'"),
        setup=_break_config,
    ),
]

# Other commands' mistakes, where their one line already holds: extend as they are reworked
# (`lmk audit verify` is to also say that the proxy creates the database).
OTHER_MISTAKES = [
    Mistake("keys revoke nobody", ("keys", "revoke", "nobody"), 1, ("lmk: no user 'nobody'",)),
    Mistake(
        "env before any CA exists",
        ("env", "alice"),
        1,
        ("lmk: no CA yet", "run `lmk ca init`"),
    ),
    Mistake(
        "audit verify without a database",
        ("audit", "verify"),
        1,
        ("lmk: no audit database at {dir}/lmk_audit.db",),
    ),
    Mistake(
        "ca init where the certs directory is a file",
        ("ca", "init"),
        1,
        ("lmk: {dir}/certs exists and is not a directory",),
        setup=_file_for_certs,
    ),
]


@pytest.fixture
def taken_port() -> Iterator[Callable[[], int]]:
    """A port something listens on, as a second proxy finds its port."""
    sockets: list[socket.socket] = []

    def take() -> int:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sockets.append(sock)
        port: int = sock.getsockname()[1]
        return port

    yield take
    for sock in sockets:
        sock.close()


@pytest.mark.parametrize(
    "mistake", MISTAKES + OTHER_MISTAKES, ids=[m.name for m in MISTAKES + OTHER_MISTAKES]
)
def test_a_mistake_is_one_line_saying_what_to_do(
    mistake: Mistake, tmp_path: Path, taken_port: Callable[[], int]
) -> None:
    config = tmp_path / "lmk_config.toml"
    shutil.copyfile(REPO / "lmk_config.toml", config)
    port, web_port = free_port(), free_port()
    what = mistake.setup(tmp_path) if mistake.setup else None
    if what == "listen":
        port = taken_port()
    elif what == "web":
        web_port = taken_port()
    text = config.read_text(encoding="utf-8")
    text = text.replace("listen_port = 8080", f"listen_port = {port}")
    config.write_text(text.replace("web_port = 8081", f"web_port = {web_port}"), "utf-8")
    used = tmp_path / mistake.config if mistake.config else config
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMK_")}
    result = subprocess.run(
        [LMK, "--config", str(used), *mistake.args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith("lmk: "), line
    fill = {"config": used.resolve(), "dir": tmp_path.resolve(), "port": port}
    if what == "web":
        fill["port"] = web_port
    for part in mistake.says:
        assert part.format(**fill) in line, line
    assert result.returncode == mistake.status, line
