"""The chain head, anchored outside the database: the head file, and the check that the database
still holds what it names.

Why
    The hash chain (:mod:`llamakey.audit.chain`) proves that the rows it holds are unchanged and
    that none is missing *between* them. It cannot see its own end cut off (the newest rows
    deleted), nor the whole file replaced by a fresh one: both leave a valid chain. So the head
    is also kept outside the database.

The head file
    ``<database>.head`` beside the database (``lmk_audit.db.head``), mode 0600, replaced
    atomically (temporary file, fsync, rename: :func:`~llamakey.files.write_atomically`) by the
    writer thread after each commit that sealed rows (at most every
    :data:`HEAD_FILE_INTERVAL_S`, so that under load one write covers many commits), and at
    once when it opens, flushes or closes a database. It holds, as JSON (:class:`Head`): the
    database's identity (``database_id``, a random id migration
    m003 stores in ``audit_meta``), the last sealed ``seq`` and its ``row_hash``, and when it was
    written. The head is also logged (INFO) when a database is opened, when it is closed, and
    at most every :data:`HEAD_LOG_INTERVAL_S` while it moves, so a log collector holds copies
    the proxy host cannot take back.

The check (:func:`anchor_problem`)
    The database must be the one the head names (same id) and must still hold the head:
    a row with that ``seq`` and ``row_hash``, or, once pruning passed it, a chain base equal
    to it. Pruning moves the base, never the head, so it keeps passing. Otherwise the database
    was replaced, its newest rows deleted, or its chain truncated and grown again.

    The writer runs it when it opens a database (at start, and when the file was removed or
    replaced under it) against the head file, and before sealing against the head it last
    sealed itself (rows deleted while it runs). On a mismatch it logs an ERROR naming what is
    missing, keeps serving, and starts a new head: the old head file is first renamed aside
    with a timestamp (``lmk_audit.db.head.20250131T090507Z``), so the evidence is kept.
    ``lmk audit verify`` runs it against the head file and against every set-aside one, so it
    keeps failing until someone has looked at them and moved them away.

Limits
    Anyone who can write the directory can delete or rewrite the head file too; the check then
    says only that the head file is missing (or nothing, once it was rewritten). The log lines
    are what such a person cannot reach. A proxy killed outright may leave the head file up to
    :data:`HEAD_FILE_INTERVAL_S` of commits behind (never ahead of the database). After a power
    loss the database may lose its last
    commits (``synchronous=NORMAL``) while the head file keeps them: the check then reports
    those rows as deleted, which they are.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

from llamakey.audit.chain import chain_base, chain_head
from llamakey.audit.schema import DATABASE_ID_KEY
from llamakey.files import write_atomically

__all__ = [
    "HEAD_FILE_INTERVAL_S",
    "HEAD_FILE_MODE",
    "HEAD_LOG_INTERVAL_S",
    "Head",
    "HeadFinding",
    "HeadUnreadable",
    "anchor_problem",
    "check_head_files",
    "database_id",
    "head_log",
    "head_path",
    "load_head_files",
    "read_head",
    "set_aside",
    "set_aside_heads",
    "write_head",
]

#: How often, at most, the head is logged (INFO) while it moves: every 5 minutes.
HEAD_LOG_INTERVAL_S: Final = 300.0

#: How often, at most, the head file is rewritten while the head moves: each write (two fsyncs)
#: then covers every commit of the last second under load, instead of one each. The first commit
#: after a quiet spell is written at once; a flush, a close and an open write it at once too.
HEAD_FILE_INTERVAL_S: Final = 1.0

#: The logger of the head lines. They are a record kept outside the host, so they are logged at
#: INFO whatever the root logger's level (``lmk serve`` leaves it at WARNING); a handler's own
#: level (mitmproxy's ``termlog_verbosity``) still applies.
head_log: Final = logging.getLogger("llamakey.audit.head")
if head_log.level == logging.NOTSET:
    head_log.setLevel(logging.INFO)

HEAD_FILE_MODE: Final = 0o600
_HEAD_SUFFIX: Final = ".head"
_FORMAT: Final = 1
_MAX_HEAD_BYTES: Final = 4096
_HEX: Final = frozenset("0123456789abcdef")


class HeadUnreadable(ValueError):
    """A head file exists but does not hold a head (the message says why)."""


@dataclass(frozen=True, slots=True)
class Head:
    """The chain head of one database: its identity, last sealed ``seq`` and ``row_hash``.

    ``seq`` 0 with the genesis hash is the head of a database with nothing sealed yet.
    """

    database_id: str
    seq: int
    row_hash: str
    updated: str = ""  # when it was written, UTC ISO-8601

    def to_json(self) -> str:
        return (
            json.dumps(
                {
                    "format": _FORMAT,
                    "database_id": self.database_id,
                    "seq": self.seq,
                    "row_hash": self.row_hash,
                    "updated": self.updated,
                },
                indent=2,
            )
            + "\n"
        )

    @classmethod
    def from_json(cls, text: str) -> Head:
        """Parse a head file's text; raises :class:`HeadUnreadable` naming what is wrong."""
        try:
            data = json.loads(text)
        except ValueError:
            raise HeadUnreadable("it is not JSON") from None
        if not isinstance(data, dict):
            raise HeadUnreadable("it is not a JSON object")
        if data.get("format") != _FORMAT:
            raise HeadUnreadable(f"unknown format {data.get('format')!r}")
        database, seq, row_hash = data.get("database_id"), data.get("seq"), data.get("row_hash")
        updated = data.get("updated", "")
        if not isinstance(database, str) or not database:
            raise HeadUnreadable("database_id is missing")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise HeadUnreadable("seq is not a count")
        if not isinstance(row_hash, str) or len(row_hash) != 64 or not set(row_hash) <= _HEX:
            raise HeadUnreadable("row_hash is not a SHA-256 hex digest")
        if not isinstance(updated, str):
            raise HeadUnreadable("updated is not a timestamp")
        return cls(database, seq, row_hash, updated)


def head_path(database: Path) -> Path:
    """Where the head file of ``database`` lives: beside it, ``<name>.head``."""
    return database.with_name(database.name + _HEAD_SUFFIX)


def read_head(path: Path) -> Head | None:
    """The head in ``path``; None if there is no such file. Raises :class:`HeadUnreadable`
    when the file cannot be read or holds no head (a symlink is not followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise HeadUnreadable(f"it cannot be read ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(_MAX_HEAD_BYTES + 1)
    except OSError as exc:
        raise HeadUnreadable(f"it cannot be read ({exc.strerror or exc})") from None
    if len(data) > _MAX_HEAD_BYTES:
        raise HeadUnreadable("it is too large to be a head file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise HeadUnreadable("it is not text") from None
    return Head.from_json(text)


def write_head(path: Path, head: Head) -> None:
    """Replace ``path`` atomically with ``head`` (0600; a planted symlink is replaced, never
    followed). Raises ``OSError``."""
    write_atomically(path, head.to_json(), HEAD_FILE_MODE)


def set_aside(path: Path, now: datetime | None = None) -> Path:
    """Rename the head file ``path`` to ``<name>.<UTC timestamp>`` (never over another file)
    and return the new path. Raises ``OSError``."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1000):
        target = path.with_name(f"{path.name}.{stamp}{f'-{n}' if n else ''}")
        # link + unlink, not rename: a rename would silently replace a file already there.
        try:
            os.link(path, target, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError:  # no hard links here (some file systems): fall back to a checked rename
            if target.exists() or target.is_symlink():
                continue
            os.rename(path, target)
            return target
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return target
    raise FileExistsError(f"no free name to set {path} aside")


def set_aside_heads(database: Path) -> list[Path]:
    """The head files set aside beside ``database``, oldest first."""
    current = head_path(database)
    prefix = current.name + "."
    try:
        names = os.listdir(current.parent)
    except OSError:
        return []
    return sorted(current.parent / n for n in names if n.startswith(prefix))


def database_id(conn: sqlite3.Connection) -> str | None:
    """The identity of the database ``conn`` is on, or None if it has none."""
    try:
        row = conn.execute(
            "SELECT value FROM audit_meta WHERE key = ?", (DATABASE_ID_KEY,)
        ).fetchone()
    except sqlite3.OperationalError:  # no audit_meta table
        return None
    return None if row is None or row[0] is None else str(row[0])


def anchor_problem(
    conn: sqlite3.Connection, head: Head, *, source: str = "its head file"
) -> str | None:
    """What the database on ``conn`` lacks of ``head``, as a sentence; None if it holds it.

    ``source`` names where ``head`` comes from, in the sentence ("the database ends at seq 17
    but its head file says 23: rows deleted"). Run it inside one read transaction.
    """
    own_id = database_id(conn)
    if own_id != head.database_id:
        if own_id is None:
            return (
                f"{source} belongs to database {head.database_id} but this database has no id:"
                " the database was replaced"
            )
        return (
            f"{source} belongs to another database (id {head.database_id}; this one is {own_id}):"
            " the database was replaced"
        )
    base_seq, base_hash = chain_base(conn)
    last_seq, _ = chain_head(conn)
    if head.seq < base_seq:
        return (
            f"{source} says seq {head.seq} but the database's chain starts after seq {base_seq}:"
            " rows were deleted past the head, or the chain base was rewritten"
        )
    if head.seq == base_seq:
        if head.row_hash != base_hash:
            return (
                f"the chain base at seq {base_seq} does not have the hash {source} records:"
                " the chain was rewritten"
            )
        return None
    if head.seq > last_seq:
        return f"the database ends at seq {last_seq} but {source} says {head.seq}: rows deleted"
    found = conn.execute("SELECT row_hash FROM requests WHERE seq = ?", (head.seq,)).fetchone()
    if found is None:
        return f"the row at seq {head.seq}, which {source} names, is missing: rows deleted"
    if found[0] != head.row_hash:
        return (
            f"the row at seq {head.seq} does not have the hash {source} records"
            f" ({head.row_hash[:16]}…): rows deleted and the chain grown again, or rewritten"
        )
    return None


# --------------------------------------------------------------------------- for verify


@dataclass(frozen=True, slots=True)
class HeadFinding:
    """One thing :func:`check_head_files` found. ``kind`` is ``"mismatch"`` (the database lacks
    what a head file names), ``"unreadable"`` (a head file holds no head) or ``"missing"`` (no
    head file, although the database has sealed rows); ``message`` is one sentence, naming the
    file."""

    kind: Literal["mismatch", "unreadable", "missing"]
    file: Path
    message: str


@dataclass(frozen=True, slots=True)
class LoadedHead:
    """A head file as read: its head, or why it holds none (``head`` and ``error`` both None:
    there is no such file)."""

    file: Path
    head: Head | None
    error: str | None
    set_aside: bool


def _load(file: Path, *, aside: bool) -> LoadedHead:
    try:
        return LoadedHead(file, read_head(file), None, aside)
    except HeadUnreadable as exc:
        return LoadedHead(file, None, str(exc), aside)


def load_head_files(database: Path) -> list[LoadedHead]:
    """The head file of ``database`` and every set-aside one, read. Read them before the
    database: a head is written only after its rows were committed, so the database read
    afterwards holds them."""
    return [
        _load(head_path(database), aside=False),
        *(_load(file, aside=True) for file in set_aside_heads(database)),
    ]


def check_head_files(conn: sqlite3.Connection, loaded: list[LoadedHead]) -> list[HeadFinding]:
    """Check the database on ``conn`` (inside one read transaction) against each head file."""
    findings: list[HeadFinding] = []
    for entry in loaded:
        label = f"{entry.file.name}{' (set aside)' if entry.set_aside else ''}"
        if entry.error is not None:
            message = f"{label} is not a usable head file: {entry.error}"
            findings.append(HeadFinding("unreadable", entry.file, message))
        elif entry.head is not None:
            problem = anchor_problem(conn, entry.head)
            if problem is not None:
                findings.append(HeadFinding("mismatch", entry.file, f"{label}: {problem}"))
        elif not entry.set_aside:
            last_seq, _ = chain_head(conn)
            if last_seq > 0:
                message = (
                    f"there is no head file {entry.file.name} although the database has sealed"
                    f" rows up to seq {last_seq}: it was deleted, or the database predates head"
                    " files (the proxy starts one when it opens the database)"
                )
                findings.append(HeadFinding("missing", entry.file, message))
    return findings
