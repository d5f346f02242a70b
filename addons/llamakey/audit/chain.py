"""Tamper evidence: the hash chain over completed rows, and :func:`verify` (``lmk audit verify``).

The chain is built in completion order
    A row is only complete when its flow ends, and a hash over half a row would prove nothing.
    So a row joins the chain when it is sealed by ``finish``: on the writer thread, in the same
    transaction that writes the completion fields, it gets ``seq`` = last seq + 1,
    ``prev_hash`` = the previous sealed row's ``row_hash`` and
    ``row_hash = sha256(prev_hash + canonical JSON of the stored row)`` (see :func:`row_digest`).
    The hash is computed from exactly the values SQLite stores, so :func:`verify` recomputes
    the same bytes. ``seq`` order is therefore completion order, not ``ts`` order. A sealed row
    is never updated again; a second ``finish`` for it is ignored.

    Rows never finished (still in flight, or the proxy was killed) have NULL ``seq``/hashes.
    :func:`verify` counts them as ``unfinished`` rather than calling them tampering; but since
    only ``finish`` ever sets ``completed_ts`` or a hash, an unsealed row carrying either is
    reported as ``inserted``.

    The canonical JSON leaves out NULL columns, so a later migration that adds a column does not
    change the hashes of existing rows. ``seq`` itself is not hashed: order is already fixed by
    each row naming its predecessor's hash.

    Pruning deletes sealed rows strictly as a ``seq`` prefix (an old row sealed after a row that
    is still inside the retention window waits for it) and records the last deleted
    ``(seq, row_hash)`` in ``audit_meta`` (:func:`set_chain_base`), so the remaining chain still
    verifies from that anchor.

The chain's own end
    The chain cannot see its newest rows cut off, nor the whole file replaced by a new one: both
    leave a valid chain. The head is therefore anchored outside the database, in a head file and
    in the proxy's log (:mod:`llamakey.audit.anchor`), and :func:`verify` checks it too.

Limits
    Anyone who can write the file can also recompute every hash after an edit. The chain catches
    edits made with a plain SQL client, not a forger who knows this module; for more, keep the
    head lines the proxy logs (or :attr:`VerifyResult.head_hash`) somewhere the proxy host
    cannot write.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from llamakey.audit.schema import connect_readonly

if TYPE_CHECKING:
    from llamakey.audit.anchor import HeadFinding

__all__ = [
    "CHAIN_COLUMNS",
    "GENESIS_HASH",
    "MissingDatabase",
    "UnreadableDatabase",
    "VerifyResult",
    "canonical_json",
    "chain_base",
    "chain_head",
    "row_digest",
    "set_chain_base",
    "verify",
]

#: ``prev_hash`` of the very first sealed row.
GENESIS_HASH: Final = "0" * 64

#: Chain bookkeeping columns: written only by the writer thread, never hashed.
CHAIN_COLUMNS: Final = frozenset({"seq", "prev_hash", "row_hash"})


def canonical_json(row: Mapping[str, object]) -> str:
    """Content columns of ``row`` as compact, key-sorted JSON; NULLs and chain columns left out."""
    content = {k: v for k, v in row.items() if v is not None and k not in CHAIN_COLUMNS}
    return json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def row_digest(prev_hash: str, row: Mapping[str, object]) -> str:
    """The ``row_hash`` a sealed row must carry: ``sha256(prev_hash + canonical JSON)`` in hex.

    The JSON holds every column of the row except ``seq``, ``prev_hash`` and ``row_hash``, with
    NULL columns omitted, keys sorted, no whitespace, UTF-8.
    """
    return hashlib.sha256((prev_hash + canonical_json(row)).encode("utf-8")).hexdigest()


def chain_base(conn: sqlite3.Connection) -> tuple[int, str]:
    """``(seq, row_hash)`` the chain starts after: genesis, or the last pruned row."""
    try:
        rows = dict(
            conn.execute(
                "SELECT key, value FROM audit_meta"
                " WHERE key IN ('chain_base_seq', 'chain_base_hash')"
            ).fetchall()
        )
    except sqlite3.OperationalError:  # no audit_meta table (not created by this module)
        return 0, GENESIS_HASH
    return int(rows.get("chain_base_seq", 0)), str(rows.get("chain_base_hash", GENESIS_HASH))


def chain_head(conn: sqlite3.Connection) -> tuple[int, str]:
    """``(seq, row_hash)`` of the last sealed row, or the chain base if there is none."""
    row = conn.execute(
        "SELECT seq, row_hash FROM requests WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return chain_base(conn)
    return int(row[0]), str(row[1])


def set_chain_base(conn: sqlite3.Connection, seq: int, row_hash: str) -> None:
    """Record where the surviving chain starts after a prune (inside the prune's transaction)."""
    for key, value in (("chain_base_seq", str(seq)), ("chain_base_hash", row_hash)):
        conn.execute(
            "INSERT INTO audit_meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


# --------------------------------------------------------------------------- verify


class UnreadableDatabase(Exception):
    """The file is not an audit database that can be read: not SQLite, truncated, damaged, or
    without the ``requests`` table. The message is one line naming the file and why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} is not a readable audit database: {reason}")
        self.path = path
        self.reason = reason


class MissingDatabase(FileNotFoundError):
    """There is no database at the path; the message says so, and what its head file (if one
    is left) says the database held."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass
class VerifyResult:
    """Outcome of :func:`verify`.

    ``problem`` is ``"altered"`` (a row's content no longer matches its hash), ``"inserted"``
    (a row that was not written by the chain) or ``"deleted"`` (the row before
    ``first_bad_id`` is missing). ``unfinished`` counts rows never sealed (in flight, or the
    proxy was killed), which prove nothing either way. ``head_hash`` is the last row's hash when
    the chain is intact: keep a copy elsewhere to detect a wholesale rewrite later.

    ``head_findings`` is what the head files said (:func:`~llamakey.audit.anchor.check_head_files`:
    newest rows deleted, database replaced, head file unreadable or missing); ``head_checked``
    is False when verify was asked not to look at them. ``ok`` is True only when the chain is
    intact and there is no finding.
    """

    ok: bool
    rows_checked: int
    first_bad_id: str | None
    problem: str | None
    unfinished: int = 0
    head_hash: str | None = None
    head_findings: tuple[HeadFinding, ...] = ()
    head_checked: bool = True


@dataclass
class _Link:
    """What verify remembers of a row it has passed."""

    rowid: int
    id: str | None
    seq: int
    row_hash: object


def _judge(
    row: dict[str, object], rowid: int, prev: _Link, before: _Link | None
) -> tuple[str, str | None] | None:
    """Classify one sealed row against its predecessors; None when it chains correctly."""
    row_id, seq, prev_hash = str(row["id"]), row["seq"], row["prev_hash"]
    if not isinstance(seq, int):  # ours are always integers
        return "altered", row_id
    try:
        self_ok = isinstance(prev_hash, str) and row_digest(prev_hash, row) == row["row_hash"]
    except (TypeError, ValueError):  # e.g. a BLOB slipped in: cannot be a row we hashed
        self_ok = False
    if prev_hash == prev.row_hash:
        return None if self_ok and seq == prev.seq + 1 else ("altered", row_id)
    if seq > prev.seq + 1:
        return "deleted", row_id
    forks = self_ok and before is not None and prev_hash == before.row_hash
    if forks or seq == prev.seq:
        # Two rows claim the same predecessor (or the same seq): the later-written one is forged.
        return "inserted", (row_id if rowid > prev.rowid else prev.id)
    return "inserted", row_id


def _walk(conn: sqlite3.Connection) -> VerifyResult:
    """The chain check proper, on an open connection (see :func:`verify`)."""
    base_seq, base_hash = chain_base(conn)
    prev = _Link(rowid=-1, id=None, seq=base_seq, row_hash=base_hash)
    before: _Link | None = None
    checked = 0
    unfinished = int(conn.execute("SELECT COUNT(*) FROM requests WHERE seq IS NULL").fetchone()[0])
    cursor = conn.execute(
        "SELECT rowid AS __rowid, * FROM requests WHERE seq IS NOT NULL ORDER BY seq, rowid"
    )
    names = [d[0] for d in cursor.description]
    for values in cursor:
        row = dict(zip(names, values, strict=True))
        rowid = int(row.pop("__rowid"))
        checked += 1
        verdict = _judge(row, rowid, prev, before)
        if verdict is not None:
            cursor.close()
            return VerifyResult(False, checked, verdict[1], verdict[0], unfinished)
        before = prev
        prev = _Link(rowid, str(row["id"]), int(row["seq"]), row["row_hash"])
    forged = conn.execute(
        "SELECT id FROM requests WHERE seq IS NULL AND (completed_ts IS NOT NULL"
        " OR prev_hash IS NOT NULL OR row_hash IS NOT NULL) ORDER BY ts LIMIT 1"
    ).fetchone()
    if forged is not None:
        return VerifyResult(False, checked, str(forged[0]), "inserted", unfinished)
    return VerifyResult(True, checked, None, None, unfinished, str(prev.row_hash))


_SQLITE_MAGIC: Final = b"SQLite format 3\x00"


def _check_file(path: Path) -> None:
    """Cheap checks of the file itself, before SQLite sees it: that it is a regular, non-empty
    SQLite file no shorter than its header says. Raises :class:`UnreadableDatabase`."""
    if not path.is_file():
        raise UnreadableDatabase(path, "it is not a regular file")
    try:
        with path.open("rb") as handle:
            header = handle.read(100)
            size = os.fstat(handle.fileno()).st_size
    except OSError as exc:
        raise UnreadableDatabase(path, exc.strerror or str(exc)) from None
    if size == 0:
        raise UnreadableDatabase(path, "the file is empty")
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        raise UnreadableDatabase(path, "it is not an SQLite database")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    change_counter, pages = header[24:28], int.from_bytes(header[28:32], "big")
    # The page count in the header is valid when written by SQLite >= 3.7.0 (valid-for matches).
    # While a write-ahead log has content, a checkpoint may be extending the file: SQLite's own
    # reads catch a truncation then.
    try:
        wal = os.stat(f"{path}-wal").st_size
    except OSError:
        wal = 0
    if not wal and header[92:96] == change_counter and size < pages * page_size:
        raise UnreadableDatabase(
            path, f"it is truncated ({size} bytes of the {pages * page_size} its header says)"
        )


def verify(path: Path, *, head: bool = True) -> VerifyResult:
    """Walk the hash chain in ``seq`` order and name the first row that breaks it; then check
    the database against its head files (unless ``head`` is False).

    A row whose content does not match its ``row_hash`` while it still links to its predecessor
    is ``altered``; a ``seq`` gap means the predecessor was ``deleted``; a row that does not link
    to its predecessor, shares its ``seq``, or forks off the row before (the later-written of the
    pair is blamed) is ``inserted``, as is an unsealed row that carries a hash or
    ``completed_ts``. Only the first problem is reported.

    What the chain cannot see is what the head files are for (:mod:`llamakey.audit.anchor`):
    the newest rows deleted, the database replaced or recreated; a missing head file is a
    finding too once the database has sealed rows.

    Opens the database read-only, and reads it in one transaction. Raises
    :class:`MissingDatabase` if there is no file (never creating one), and
    :class:`UnreadableDatabase` if it is not an audit database that can be read.
    """
    # Anchoring builds on this module; imported here so it can.
    from llamakey.audit.anchor import check_head_files, head_path, load_head_files, read_head

    path = Path(path)
    heads = load_head_files(path) if head else []
    if not path.exists() and not path.is_symlink():
        message = f"no audit database at {path}"
        with contextlib.suppress(ValueError):
            left = read_head(head_path(path))
            if left is not None:
                message += (
                    f", but its head file {head_path(path).name} says it held database"
                    f" {left.database_id} up to seq {left.seq}: the database was deleted"
                )
        raise MissingDatabase(message)
    _check_file(path)
    try:
        conn = connect_readonly(path)
    except (OSError, sqlite3.Error) as exc:
        raise UnreadableDatabase(path, str(exc)) from None
    try:
        conn.execute("BEGIN")  # one snapshot for the walk and the head checks
        tables = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'requests'"
        ).fetchone()
        if tables is None:
            raise UnreadableDatabase(path, "it has no requests table")
        result = _walk(conn)
        if head:
            result.head_findings = tuple(check_head_files(conn, heads))
            result.ok = result.ok and not result.head_findings
        else:
            result.head_checked = False
        return result
    except sqlite3.Error as exc:
        raise UnreadableDatabase(path, str(exc)) from None
    finally:
        conn.close()
