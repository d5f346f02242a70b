"""The audit database's tables, built by named, recorded migrations.

Tables
    ``requests``  one row per flow (flow id is the primary key), see :data:`REQUEST_COLUMNS`.
                  Indexes on ``(ts)``, ``(user, ts)``, ``(provider, ts)`` and a unique one on
                  ``seq``. ``groups`` is a JSON list, so ``json_each(groups)`` explodes it.
    ``bodies``    request/response bodies, only written when ``log_bodies`` is on; index on ``ts``.
    ``audit_meta``  key/value: the database's random identity (``database_id``, named by its
                  head file, see :mod:`llamakey.audit.anchor`) and where the hash chain starts
                  after a prune.

Migrations
    Every schema change is a function registered, in order, on :data:`MIGRATIONS`, an
    ``sqlite_utils.Migrations`` set: on open, each one not yet applied runs and is recorded, with
    its name and time, in sqlite-utils' table ``_sqlite_migrations``. All pending migrations run
    in one ``BEGIN IMMEDIATE`` transaction, each in its own savepoint with its record: two
    processes opening a new file cannot both migrate it, and a failing migration leaves nothing
    behind.

    A migration is history: once released it is never edited, renamed or reordered, since its
    name is what the database remembers. A new column must default to NULL: NULLs are left out of
    row hashes, so old rows still verify. A migration that adds a column to ``requests`` adds it
    to :data:`REQUEST_COLUMNS` and as a field to ``RequestStart`` or ``RequestEnd`` too (the tests
    compare all three).

    Databases from before the migration table carry only ``PRAGMA user_version = 1``. The first
    migration creates exactly their schema with ``IF NOT EXISTS``, so on such a file it changes
    nothing and is simply recorded: rows and chain stay as they are.

    ``PRAGMA user_version`` is still set, to :data:`SCHEMA_VERSION` (the number of migrations),
    so releases from before the migration table refuse a database a later migration changed.
    This code refuses a file whose ``user_version`` is higher, or that records a migration it
    does not know, as written by a newer LlaMaKey.

    A table dropped behind the writer's back is not recreated (its migration is recorded as
    applied): writes to it then fail, loudly, until the file is restored or moved away (which
    starts a new database).
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final, Protocol

from sqlite_utils import Database, Migrations

from llamakey.audit.sink import AuditUnavailable

__all__ = [
    "DATABASE_ID_KEY",
    "MIGRATIONS",
    "MIGRATION_NAMES",
    "REQUEST_COLUMNS",
    "SCHEMA_VERSION",
    "connect_readonly",
    "ensure_schema",
    "immediate",
]

#: The ``requests`` table as migration 1 creates it. Frozen: later migrations add their
#: columns to :data:`REQUEST_COLUMNS`, never here.
_REQUESTS_V1: Final[Mapping[str, str]] = {
    "id": "TEXT",
    "ts": "TEXT",
    "user": "TEXT",
    "groups": "TEXT",
    "client_addr": "TEXT",
    "provider": "TEXT",
    "host": "TEXT",
    "method": "TEXT",
    "path": "TEXT",
    "model": "TEXT",
    "stream": "INTEGER",
    "request_bytes": "INTEGER",
    "status": "INTEGER",
    "refused_by": "TEXT",
    "error": "TEXT",
    "latency_ms": "REAL",
    "ttfb_ms": "REAL",
    "response_bytes": "INTEGER",
    "input_tokens": "INTEGER",
    "output_tokens": "INTEGER",
    "cache_read_tokens": "INTEGER",
    "cache_write_tokens": "INTEGER",
    "reasoning_tokens": "INTEGER",
    "cost_usd": "REAL",
    "provider_cost_usd": "REAL",
    "response_model": "TEXT",
    "finish_reason": "TEXT",
    "client_disconnected": "INTEGER",
    "completed_ts": "TEXT",
    "seq": "INTEGER",
    "prev_hash": "TEXT",
    "row_hash": "TEXT",
}

#: Column name -> SQLite type of the ``requests`` table, in table order.
REQUEST_COLUMNS: Final[Mapping[str, str]] = {
    **_REQUESTS_V1,
    "usage_estimated": "INTEGER",  # m002
    "cut_by": "TEXT",  # m004
    "deployment": "TEXT",  # m005_routing
    "attempts": "TEXT",  # m005_routing
}

#: The ``audit_meta`` key of the database's identity (m003).
DATABASE_ID_KEY: Final = "database_id"

#: The audit schema's migration set; its name keeps it apart from any other set in the file.
MIGRATIONS: Final = Migrations("llamakey.audit")

_names: list[str] = []


class _Step(Protocol):
    __name__: str

    def __call__(self, db: Database, /) -> None: ...


def _migration[S: _Step](step: S) -> S:
    """Register ``step`` on :data:`MIGRATIONS` under its function name, after the others."""
    _names.append(step.__name__)
    return MIGRATIONS()(step)


# --------------------------------------------------------------------------- migrations


@_migration
def m001_create_tables(db: Database) -> None:
    """Schema 1: ``requests`` with its indexes, ``bodies``, ``audit_meta``.

    Exactly the schema of the files written before migrations were recorded (``user_version``
    1), and all ``IF NOT EXISTS``: on such a file this changes nothing and is just recorded.
    """
    requests = db.table("requests")
    requests.create(
        dict(_REQUESTS_V1),
        pk="id",
        not_null={"ts"},
        if_not_exists=True,
    )
    requests.create_index(["ts"], index_name="idx_requests_ts", if_not_exists=True)
    requests.create_index(["user", "ts"], index_name="idx_requests_user_ts", if_not_exists=True)
    requests.create_index(
        ["provider", "ts"], index_name="idx_requests_provider_ts", if_not_exists=True
    )
    # The chain is walked and extended by seq; unique also stops two rows sharing a slot.
    requests.create_index(["seq"], index_name="idx_requests_seq", unique=True, if_not_exists=True)
    bodies = db.table("bodies")
    bodies.create(
        {"request_id": "TEXT", "ts": "TEXT", "request_body": "TEXT", "response_body": "TEXT"},
        pk="request_id",
        foreign_keys=[("request_id", "requests", "id")],
        if_not_exists=True,
    )
    bodies.create_index(["ts"], index_name="idx_bodies_ts", if_not_exists=True)
    db.table("audit_meta").create({"key": "TEXT", "value": "TEXT"}, pk="key", if_not_exists=True)


@_migration
def m002_usage_estimated(db: Database) -> None:
    """``requests.usage_estimated``: 1 when the tokens were estimated rather than reported by
    the provider, 0 when reported, NULL when unknown (every row before this migration)."""
    db.table("requests").add_column("usage_estimated", "INTEGER")


@_migration
def m003_database_id(db: Database) -> None:
    """A random identity for the database, in ``audit_meta``: its head file names it, so a
    database replaced by another (or recreated) is told apart from the one the head describes.
    A database from before this migration gets its identity now."""
    db.execute(
        "INSERT OR IGNORE INTO audit_meta (key, value) VALUES (?, ?)",
        [DATABASE_ID_KEY, secrets.token_hex(16)],
    )


@_migration
def m004_stream_cut(db: Database) -> None:
    """``requests.cut_by``: the rule that cut a streamed answer off while it flowed
    (``budget_exceeded``), NULL for every other row (and every row before this migration)."""
    db.table("requests").add_column("cut_by", "TEXT")


@_migration
def m005_routing(db: Database) -> None:
    """``requests.deployment``: the catalogue deployment that served a routed request, and
    ``requests.attempts``: a JSON list of every deployment tried, in order
    (``[{"deployment", "status" | "error", "ms"}]``); NULL for a request not routed."""
    db.table("requests").add_column("deployment", "TEXT")
    db.table("requests").add_column("attempts", "TEXT")


# Later migrations go here, each a new function decorated with @_migration.

#: Names of this code's migrations, in the order they apply.
MIGRATION_NAMES: Final = tuple(_names)
#: ``PRAGMA user_version`` of an up-to-date database: the number of migrations.
SCHEMA_VERSION: Final = len(MIGRATION_NAMES)


# --------------------------------------------------------------------------- opening


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Apply and record every pending migration, then set ``PRAGMA user_version``.

    Cheap when nothing is pending, so it runs on every open. ``conn`` must be in autocommit mode
    (``isolation_level=None``). Raises :class:`AuditUnavailable` if the file was written by a
    newer schema; then nothing is changed.
    """
    db = Database(conn, execute_plugins=False, recursive_triggers=False)
    with immediate(conn):
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        unknown = [m.name for m in MIGRATIONS.applied(db) if m.name not in MIGRATION_NAMES]
        if version > SCHEMA_VERSION or unknown:
            raise AuditUnavailable(
                f"audit database schema version {version} "
                f"{'(migration ' + unknown[0] + ') ' if unknown else ''}is newer than this "
                f"LlaMaKey understands ({SCHEMA_VERSION})"
            )
        MIGRATIONS.apply(db)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taking the write lock up front (``BEGIN IMMEDIATE``) so it never
    fails half-way for a lock; committed at the end, rolled back on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        # SQLite may already have rolled back (e.g. a full disk); that error is not ours.
        with contextlib.suppress(sqlite3.Error):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        raise


def connect_readonly(path: Path) -> sqlite3.Connection:
    """Open ``path`` read-only (``mode=ro``), so reading can run while the proxy writes; a
    missing file raises ``FileNotFoundError`` instead of being created."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no audit database at {path}")
    return sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
