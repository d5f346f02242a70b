"""`lmk audit browse` on the command line: registered under `lmk audit`, and each refusal one
line `lmk: …` with status 2 (usage) or 1 (failure), before any Datasette starts."""

from __future__ import annotations

import argparse
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamakey import config
from llamakey.browse import server
from llamakey.cli import build_parser
from tests.browsing import write_known_rows
from tests.unit.cli.helpers import lmk, lmk_fails


def subcommands(parser: argparse.ArgumentParser) -> list[str]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(action.choices)


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    """Fail the test if Datasette would be started."""
    started: list[list[str]] = []

    def popen(command: list[str], **kwargs: object) -> None:
        started.append(command)
        raise AssertionError("Datasette started")

    monkeypatch.setattr(subprocess, "Popen", popen)
    yield started
    assert started == []


def test_browse_is_an_audit_command_run_by_its_module() -> None:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    audit = commands.choices["audit"]
    assert subcommands(audit) == ["verify", "browse"]
    args = parser.parse_args(["audit", "browse"])
    assert args.func.__module__ == "llamakey.cli.browse"
    assert args.func.__name__ == "cmd_audit_browse"
    assert (args.port, args.host, args.db) == (8001, "127.0.0.1", None)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "example.com", "10.0.0.1"])
def test_a_non_loopback_host_is_a_usage_error(
    cfg: Path,
    host: str,
    no_server: list[list[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as caught:
        lmk(cfg, "audit", "browse", "--host", host)
    assert caught.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"lmk: --host {host}") or line.startswith(f"lmk: --host {host!r}")


@pytest.mark.parametrize(("given", "host"), [("::1", "::1"), ("127.0.0.2", "127.0.0.2")])
def test_loopback_hosts_are_taken(given: str, host: str) -> None:
    assert server.check_loopback(given) == host
    assert server.check_loopback("localhost") == "127.0.0.1"


@pytest.mark.parametrize("port", ["65536", "-1", "http"])
def test_a_bad_port_is_a_usage_error(
    cfg: Path,
    port: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as caught:
        lmk(cfg, "audit", "browse", "--port", port)
    assert caught.value.code == 2
    assert "not a port number" in capsys.readouterr().err


def test_without_a_database_names_the_configured_path(
    cfg: Path,
    no_server: list[list[str]],
) -> None:
    audit_path = config.load(cfg).audit_path
    assert not audit_path.exists()
    assert lmk_fails(cfg, "audit", "browse") == f"lmk: no audit database at {audit_path} yet"


def test_without_datasette_says_how_to_install_it(
    cfg: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_server: list[list[str]],
) -> None:
    db = write_known_rows(tmp_path / "audit.db")
    monkeypatch.setattr(server, "datasette_installed", lambda: False)
    message = lmk_fails(cfg, "audit", "browse", "--db", str(db))
    assert message == "lmk: lmk audit browse needs Datasette: pip install 'llamakey[browse]'"


def test_a_port_in_use_is_one_line(
    cfg: Path,
    tmp_path: Path,
    no_server: list[list[str]],
) -> None:
    db = write_known_rows(tmp_path / "audit.db")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        message = lmk_fails(cfg, "audit", "browse", "--db", str(db), "--port", str(port))
    assert message.startswith(f"lmk: cannot listen on 127.0.0.1:{port}: ")
    assert "\n" not in message


def test_a_file_that_is_not_a_database_is_one_line(
    cfg: Path,
    tmp_path: Path,
    no_server: list[list[str]],
) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not SQLite" * 100)
    message = lmk_fails(cfg, "audit", "browse", "--db", str(junk), "--port", "0")
    assert message.startswith(f"lmk: cannot read the audit database {junk}: ")
    assert "\n" not in message
