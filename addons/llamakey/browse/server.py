"""Serving the audit database: check, snapshot, start Datasette behind the gate, stop.

See :mod:`llamakey.browse` for why it is a snapshot and who can see it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Final

from llamakey.audit.rows import format_ts
from llamakey.audit.schema import connect_readonly
from llamakey.browse import DEFAULT_PORT, INSTALL_HINT
from llamakey.browse.gate import COOKIE_ENV, TOKEN_ENV, TOKEN_PARAM, cookie_name
from llamakey.browse.metadata import metadata_for

__all__ = [
    "BrowseError",
    "Served",
    "check_loopback",
    "datasette_installed",
    "serve",
    "snapshot",
]

#: Ad-hoc aggregates over a year of requests can take more than Datasette's default 1 s.
SQL_TIME_LIMIT_MS: Final = 10_000
READY_TIMEOUT_S: Final = 60.0

_PLUGIN_SHIM: Final = (
    '"""Written by `lmk audit browse`: its access-token gate, as a Datasette plugin."""\n'
    "from llamakey.browse.plugin import asgi_wrapper  # noqa: F401\n"
)


class BrowseError(Exception):
    """Why the database cannot be browsed: one line, for ``lmk: …``."""


# --------------------------------------------------------------------------- checks


def datasette_installed() -> bool:
    return importlib.util.find_spec("datasette") is not None


def check_loopback(host: str) -> str:
    """``host`` if it is a loopback IP address (127.0.0.0/8, ::1); ``localhost`` is 127.0.0.1.
    Raises ``ValueError`` otherwise."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"--host {host!r} is not an IP address") from None
    if not address.is_loopback:
        raise ValueError(
            f"--host {host} is not a loopback address: the audit log is served on this machine "
            "only (127.0.0.1 or ::1); from elsewhere, forward the port over SSH"
        )
    return str(address)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


_TILDE_SAFE: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def _tilde_encode(name: str) -> str:
    """A database name as Datasette spells it in a URL path (its "tilde encoding")."""
    return "".join(
        chr(b) if b in _TILDE_SAFE else "+" if b == 0x20 else f"~{b:02X}"
        for b in name.encode("utf-8")
    )


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise BrowseError(
                f"cannot listen on {_url_host(host)}:{port}: {exc.strerror or exc}"
            ) from None


# --------------------------------------------------------------------------- the snapshot


def snapshot(source: Path, target: Path) -> None:
    """Copy the audit database ``source`` to a new file ``target`` (0600), consistently, while
    the proxy may be writing it: SQLite's backup API reading through a ``mode=ro`` connection,
    committed WAL content included. ``source`` is never written. The copy is in rollback-journal
    mode, a single self-contained file."""
    try:
        src = connect_readonly(source)
    except FileNotFoundError:
        raise BrowseError(f"no audit database at {source} yet") from None
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode = DELETE")
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise BrowseError(f"cannot read the audit database {source}: {exc}") from None
    finally:
        src.close()


# --------------------------------------------------------------------------- serving


@dataclass(frozen=True)
class Served:
    """What :func:`serve` reports once Datasette answers."""

    url: str  #: the address to open, token included
    database: str  #: Datasette's name for it
    source: Path  #: the file the snapshot was taken from
    taken: str  #: when (UTC, ISO-8601)


@contextlib.contextmanager
def _stopped_by_sigterm() -> Iterator[None]:
    """Turn SIGTERM into SystemExit while serving, so the child is stopped and the snapshot
    removed (``finally``) rather than left behind."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait_ready(process: subprocess.Popen[bytes], host: str, port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if (status := process.poll()) is not None:
            raise BrowseError(f"datasette exited with status {status} before serving")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        if time.monotonic() >= deadline:
            raise BrowseError(f"datasette did not answer on port {port} in {READY_TIMEOUT_S} s")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def serve(
    database: Path,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    on_ready: Callable[[Served], None],
) -> int:
    """Serve a snapshot of ``database`` with Datasette on loopback ``host``:``port`` (0: any
    free port) until Datasette exits or this process is interrupted (Ctrl-C, SIGTERM).

    Calls ``on_ready`` once Datasette accepts connections. Returns Datasette's exit status, or
    0 when interrupted. Raises :class:`BrowseError` if Datasette is not installed, the database
    is missing or unreadable, or the port is taken.
    """
    host = check_loopback(host)
    if not datasette_installed():
        raise BrowseError(f"lmk audit browse needs Datasette: {INSTALL_HINT}")
    database = Path(database).absolute()
    if not database.is_file():
        raise BrowseError(f"no audit database at {database} yet")
    port = port or _free_port(host)
    _check_port(host, port)
    metadata = metadata_for(database.stem)
    # From here on SIGTERM and Ctrl-C stop Datasette and remove the snapshot, whenever they come.
    with _stopped_by_sigterm():
        workdir = Path(tempfile.mkdtemp(prefix="lmk-browse-"))  # 0700
        process: subprocess.Popen[bytes] | None = None
        try:
            copy = workdir / database.name  # the same name: Datasette names it as the original
            taken = format_ts(datetime.now(UTC))
            snapshot(database, copy)
            metadata_file = workdir / "metadata.json"
            metadata_file.write_text(json.dumps(metadata, indent=2), encoding="utf-8")
            plugins = workdir / "plugins"
            plugins.mkdir()
            (plugins / "lmk_browse_gate.py").write_text(_PLUGIN_SHIM, encoding="utf-8")
            token = secrets.token_urlsafe(32)
            command = [
                *(sys.executable, "-m", "datasette", "serve"),
                *("--immutable", str(copy)),
                *("--metadata", str(metadata_file)),
                *("--plugins-dir", str(plugins)),
                *("--host", host, "--port", str(port)),
                *("--setting", "sql_time_limit_ms", str(SQL_TIME_LIMIT_MS)),
            ]
            # The token goes in the environment: every local user can read a process's
            # arguments.
            env = {**os.environ, TOKEN_ENV: token, COOKIE_ENV: cookie_name(port)}
            env.pop("DATASETTE_SECRET", None)  # a fresh signing secret per run
            process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)
            _wait_ready(process, host, port)
            path = _tilde_encode(database.stem)
            url = f"http://{_url_host(host)}:{port}/{path}?{TOKEN_PARAM}={token}"
            on_ready(Served(url=url, database=database.stem, source=database, taken=taken))
            return process.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            if process is not None:
                _stop(process)
            shutil.rmtree(workdir, ignore_errors=True)
