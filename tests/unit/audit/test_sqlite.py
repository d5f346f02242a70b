"""The SQLite backend: file modes, stored values, bodies, sealing (also of rows begun before a
restart) and pruning. ``SQLiteBackend(":memory:")`` tests run on the test's own thread."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llamakey.audit import GENESIS_HASH, AuditUnavailable, AuditWriter, SQLiteBackend, verify
from llamakey.audit.backend import Begin, Bodies, Finish
from llamakey.audit.chain import row_digest
from tests.unit.audit.helpers import TS_RE, done, execute, full_row, query, row, write_sealed

# --------------------------------------------------------------------------- files


def test_start_fails_cleanly_when_path_is_impossible(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    w = AuditWriter(blocker / "audit.db")
    with pytest.raises(AuditUnavailable, match="not running"):
        w.begin(row("r0")).result(1)  # not started yet
    with pytest.raises(AuditUnavailable, match="not-a-dir"):
        w.start()
    with pytest.raises(AuditUnavailable, match="not running"):
        w.begin(row("r1")).result(1)


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_files_are_0600_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "audit.db"
    old = os.umask(umask)
    try:
        w = AuditWriter(path)
        w.start()
        write_sealed(w, "r1")
        for name in ("audit.db", "audit.db-wal", "audit.db-shm"):
            assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name
        w.close()
    finally:
        os.umask(old)


def test_loose_permissions_are_tightened_on_open(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    w = AuditWriter(path)
    w.start()
    w.close()
    os.chmod(path, 0o644)
    w = AuditWriter(path)
    w.start()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    w.close()


# --------------------------------------------------------------------------- stored values


def test_path_query_and_fragment_are_never_stored(writer: AuditWriter, db_path: Path) -> None:
    writer.begin(
        row("g1", path="/v1beta/models/gemini:generateContent?key=AIzaTOPSECRET&alt=sse")
    ).result(5)
    writer.begin(row("g2", path="/v1/x#AIzaTOPSECRET")).result(5)
    assert query(db_path, "SELECT path FROM requests ORDER BY id") == [
        ("/v1beta/models/gemini:generateContent",),
        ("/v1/x",),
    ]
    for name in ("audit.db", "audit.db-wal"):
        assert b"AIzaTOPSECRET" not in (db_path.parent / name).read_bytes()


def test_values_are_normalised(writer: AuditWriter, db_path: Path) -> None:
    moment = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    writer.begin(row("t1", ts=moment, groups=("ml", "eng"), stream=False)).result(5)
    writer.begin(
        row("t2", ts=datetime.fromisoformat("2025-01-02T04:04:05+01:00"), groups=("é",))
    ).result(5)
    writer.begin(row("t3", user=None, groups=None, stream=None)).result(5)
    rows = query(db_path, 'SELECT id, ts, "groups", stream FROM requests ORDER BY id')
    assert rows[0] == ("t1", "2025-01-02T03:04:05.678Z", '["ml", "eng"]', 0)
    assert rows[1] == ("t2", "2025-01-02T03:04:05.000Z", '["é"]', 1)
    assert rows[2][2:] == (None, None)
    assert TS_RE.match(rows[2][1])


def test_bodies_only_when_enabled(tmp_path: Path) -> None:
    on = AuditWriter(tmp_path / "on.db", log_bodies=True)
    off = AuditWriter(tmp_path / "off.db")
    for w in (on, off):
        w.start()
        w.begin(row("r1")).result(5)
        w.bodies("r1", '{"messages": []}', '{"choices": []}')
        w.close()
    assert query(
        tmp_path / "on.db", "SELECT request_id, request_body, response_body FROM bodies"
    ) == [("r1", '{"messages": []}', '{"choices": []}')]
    assert query(tmp_path / "off.db", "SELECT COUNT(*) FROM bodies") == [(0,)]


# --------------------------------------------------------------------------- the backend alone


def test_memory_backend_seals_in_one_transaction() -> None:
    db = SQLiteBackend(":memory:")
    db.open()
    first, dup = Begin(row("r1")), Begin(row("r1"))
    db.write([first, Begin(row("r2")), dup, Finish("r2", done(status=200))])
    assert (first.rejected, dup.rejected is not None) == (None, True)  # only the duplicate
    db.write([Finish("r1", done(status=201)), Bodies("r1", datetime.now(UTC), "q", "a")])
    conn = db.connection()
    assert conn.execute("SELECT id, seq, status FROM requests ORDER BY seq").fetchall() == [
        ("r2", 1, 200),
        ("r1", 2, 201),
    ]
    cursor = conn.execute("SELECT * FROM requests WHERE id = 'r2'")
    r2 = dict(zip([d[0] for d in cursor.description], cursor.fetchone(), strict=True))
    assert r2["prev_hash"] == GENESIS_HASH
    assert r2["row_hash"] == row_digest(GENESIS_HASH, r2)
    # The writer decides whether bodies are logged; the backend stores what it is given.
    assert conn.execute("SELECT request_id, request_body FROM bodies").fetchall() == [("r1", "q")]
    db.close()


def test_a_row_begun_before_a_restart_is_sealed_as_stored(db_path: Path) -> None:
    before = AuditWriter(db_path)
    before.start()
    before.begin(row("r1", user="ü")).result(5)
    before.close()
    after = AuditWriter(db_path)
    after.start()
    after.finish("r1", done(status=200, cost_usd=0.5))
    after.flush()
    after.close()
    r1 = full_row(db_path, "r1")
    assert (r1["seq"], r1["status"], r1["user"]) == (1, 200, "ü")
    assert verify(db_path).ok


# --------------------------------------------------------------------------- prune


def test_prune_deletes_only_old_rows_and_keeps_the_chain(db_path: Path) -> None:
    w = AuditWriter(db_path, log_bodies=True, prune_batch=2)
    w.start()
    try:
        old = datetime.now(UTC) - timedelta(days=40)
        new = datetime.now(UTC) - timedelta(days=1)
        for i in range(5):
            write_sealed(w, f"old{i}", ts=old)
        w.bodies("old0", "req", "resp")
        write_sealed(w, "new1", ts=new)
        w.bodies("new1", "req", "resp")
        # Old, but completed after new1: it must wait, or the chain would get a hole.
        write_sealed(w, "old_late", ts=old)
        write_sealed(w, "new2", ts=new)
        w.begin(row("old_unfinished", ts=old)).result(5)
        w.begin(row("new_unfinished", ts=new)).result(5)

        commits = w.commits
        assert w.prune(30).result(10) == 6
        assert w.commits - commits >= 3  # six rows, two per transaction

        remaining = {r[0] for r in query(db_path, "SELECT id FROM requests")}
        assert remaining == {"new1", "old_late", "new2", "new_unfinished"}
        assert query(db_path, "SELECT request_id FROM bodies") == [("new1",)]
        result = verify(db_path)
        assert (result.ok, result.rows_checked, result.unfinished) == (True, 3, 1)

        write_sealed(w, "new3")
        assert verify(db_path).ok
        # Deleting the oldest surviving row is still caught after a prune.
        execute(db_path, "DELETE FROM requests WHERE id = 'new1'")
        assert (verify(db_path).first_bad_id, verify(db_path).problem) == ("old_late", "deleted")

        with pytest.raises(ValueError):
            w.prune(-1)
    finally:
        w.close()
