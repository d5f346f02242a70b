"""The chain head anchored outside the database: the head file is written after every commit
that sealed rows and logged now and then; a database replaced, recreated or cut short is
reported by the writer (at start and while it runs) and by verify, and the old head file is
kept; pruning moves the chain base, never the head."""

from __future__ import annotations

import json
import logging
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llamakey.audit import (
    GENESIS_HASH,
    AuditWriter,
    Head,
    anchor_problem,
    head_path,
    read_head,
    verify,
)
from llamakey.audit.anchor import HeadUnreadable, set_aside, set_aside_heads
from llamakey.audit.schema import connect_readonly
from tests.harness import wait_until
from tests.unit.audit.helpers import done, execute, full_row, query, row, write_sealed


def head_of(db: Path) -> Head:
    head = read_head(head_path(db))
    assert head is not None
    return head


def db_id(db: Path) -> str:
    [(value,)] = query(db, "SELECT value FROM audit_meta WHERE key = 'database_id'")
    return str(value)


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def remove_database(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def findings(db: Path) -> list[str]:
    return [f.message for f in verify(db).head_findings]


# --------------------------------------------------------------------------- the head file


def test_the_head_file_follows_every_sealing_commit(writer: AuditWriter, db_path: Path) -> None:
    file = head_path(db_path)
    assert file == db_path.with_name("audit.db.head")
    start = head_of(db_path)  # written when the database was opened
    assert (start.seq, start.row_hash) == (0, GENESIS_HASH)
    assert start.database_id == db_id(db_path)
    assert len(start.database_id) == 32

    for n in range(1, 4):
        write_sealed(writer, f"r{n}")  # flush waits for the head file too
        head = head_of(db_path)
        assert (head.seq, head.row_hash) == (n, full_row(db_path, f"r{n}")["row_hash"])
        assert datetime.now(UTC) - datetime.fromisoformat(head.updated) < timedelta(minutes=1)
    assert stat.S_IMODE(os.stat(file).st_mode) == 0o600
    data = json.loads(file.read_text())
    assert set(data) == {"format", "database_id", "seq", "row_hash", "updated"}

    writer.begin(row("unsealed")).result(5)  # a commit that sealed nothing leaves it alone
    writer.flush()
    assert head_of(db_path).seq == 3
    # Only the head file and the database's own files are left beside it (no temporary file).
    assert {p.name for p in db_path.parent.iterdir()} <= {
        "audit.db",
        "audit.db-wal",
        "audit.db-shm",
        "audit.db.head",
    }
    assert verify(db_path).ok


def test_under_load_the_head_file_catches_up_by_itself(db_path: Path) -> None:
    w = AuditWriter(db_path, group_commit_ms=0)
    w.backend.keeper.head_file_interval_s = 0.2  # type: ignore[attr-defined]
    w.start()
    try:
        for n in range(20):  # no flush: nothing waits for the head file
            w.begin(row(f"r{n}")).result(5)
            w.finish(f"r{n}", done(status=200))
        # Rewritten at most every 0.2 s, the last time with nothing more queued.
        wait_until(lambda: head_of(db_path).seq == 20, "the head file to reach seq 20")
        assert head_of(db_path).row_hash == full_row(db_path, "r19")["row_hash"]
    finally:
        w.close()


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_the_head_file_is_0600_and_never_written_through_a_symlink(
    tmp_path: Path, umask: int
) -> None:
    db = tmp_path / "audit.db"
    target = tmp_path / "elsewhere"
    target.write_text("theirs")
    os.symlink(target, head_path(db))
    old = os.umask(umask)
    try:
        w = AuditWriter(db)
        w.start()
        write_sealed(w, "r1")
        w.close()
    finally:
        os.umask(old)
    assert target.read_text() == "theirs"
    assert not head_path(db).is_symlink()
    assert stat.S_IMODE(os.stat(head_path(db)).st_mode) == 0o600
    assert head_of(db).seq == 1


def test_the_head_is_logged_at_open_at_close_and_while_it_moves(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # No caplog.set_level: the head lines must pass a root logger left at WARNING.
    assert logging.getLogger().getEffectiveLevel() > logging.INFO
    w = AuditWriter(db_path)
    w.backend.keeper.head_log_interval_s = 0.3  # type: ignore[attr-defined]
    w.start()
    try:
        identity = db_id(db_path)

        def logged(seq: int) -> bool:
            return any(
                f"(id {identity}): seq {seq}, row_hash " in m
                for m in messages(caplog, logging.INFO)
            )

        assert logged(0)
        write_sealed(w, "r1")
        write_sealed(w, "r2")
        # Logged within the interval even with nothing more to do (the writer wakes for it).
        wait_until(lambda: logged(2), "the head line for seq 2", timeout=5)
        hash2 = full_row(db_path, "r2")["row_hash"]
        assert any(m.endswith(f"seq 2, row_hash {hash2}") for m in messages(caplog, logging.INFO))
        w.backend.keeper.head_log_interval_s = 3600  # type: ignore[attr-defined]
        write_sealed(w, "r3")
        assert not logged(3)  # not due yet
    finally:
        w.close()
    assert logged(3)  # closing logs the last head


def test_a_head_file_that_cannot_be_written_is_logged_and_retried(
    writer: AuditWriter, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = head_path(db_path)
    file.unlink()
    file.mkdir()  # now nothing can replace it
    try:
        write_sealed(writer, "r1")  # the database itself is fine: writing goes on
        assert query(db_path, "SELECT seq FROM requests") == [(1,)]
        assert any("cannot be written" in m for m in messages(caplog, logging.ERROR))
    finally:
        file.rmdir()
    wait_until(lambda: file.is_file() and head_of(db_path).seq == 1, "the head file again")


# --------------------------------------------------------------------------- at start


def test_newest_rows_deleted_while_stopped_are_reported_at_start(
    sealed_db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old_head = head_path(sealed_db).read_text()
    execute(sealed_db, "DELETE FROM requests WHERE seq >= 4")
    assert not verify(sealed_db).ok
    assert findings(sealed_db) == [
        "audit.db.head: the database ends at seq 3 but its head file says 5: rows deleted"
    ]

    w = AuditWriter(sealed_db)
    w.start()  # keeps serving
    try:
        [error] = messages(caplog, logging.ERROR)
        assert "the database ends at seq 3 but its head file says 5: rows deleted" in error
        [kept] = set_aside_heads(sealed_db)
        assert kept.name.startswith("audit.db.head.") and kept.name in error
        assert kept.read_text() == old_head  # the evidence, untouched
        assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600
        assert head_of(sealed_db).seq == 3  # a new head starts from what the database holds
        write_sealed(w, "r6")
    finally:
        w.close()
    result = verify(sealed_db)
    assert (result.problem, result.ok) == (None, False)  # the chain itself is intact
    [finding] = result.head_findings
    assert finding.kind == "mismatch" and finding.file == kept
    # Seq 4 was sealed again on what was left: still short of the head that was set aside.
    assert finding.message == (
        f"{kept.name} (set aside): the database ends at seq 4 but its head file says 5:"
        " rows deleted"
    )


def test_a_replaced_database_is_reported_at_start(
    sealed_db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old_id = db_id(sealed_db)
    remove_database(sealed_db)
    w = AuditWriter(sealed_db)
    w.start()
    try:
        write_sealed(w, "new1")
    finally:
        w.close()
    new_id = db_id(sealed_db)
    [error] = messages(caplog, logging.ERROR)
    assert f"belongs to another database (id {old_id}; this one is {new_id})" in error
    assert "the database was replaced" in error
    assert head_of(sealed_db).database_id == new_id
    [kept] = set_aside_heads(sealed_db)
    [message] = findings(sealed_db)
    assert message == (
        f"{kept.name} (set aside): its head file belongs to another database (id {old_id};"
        f" this one is {new_id}): the database was replaced"
    )


def test_a_missing_head_file_is_a_warning_and_a_new_head_starts(
    sealed_db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    head_path(sealed_db).unlink()
    result = verify(sealed_db)
    assert not result.ok
    [finding] = result.head_findings
    assert finding.kind == "missing"
    assert "no head file audit.db.head although the database has sealed rows up to seq 5" in (
        finding.message
    )
    assert verify(sealed_db, head=False).ok  # the chain alone is intact

    w = AuditWriter(sealed_db)
    w.start()
    w.close()
    [warning] = messages(caplog, logging.WARNING)
    assert "no head file" in warning and "up to seq 5" in warning
    assert not messages(caplog, logging.ERROR)
    assert head_of(sealed_db).seq == 5
    assert verify(sealed_db).ok


def test_a_new_empty_database_needs_no_head_file(db_path: Path) -> None:
    w = AuditWriter(db_path)
    w.start()
    w.begin(row("r1")).result(5)  # unsealed only
    w.close()
    head_path(db_path).unlink()
    assert verify(db_path).ok


def test_a_head_file_that_is_not_one_is_kept_and_replaced(
    sealed_db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    head_path(sealed_db).write_text("not json")
    [finding] = verify(sealed_db).head_findings
    assert finding.kind == "unreadable"
    assert finding.message == "audit.db.head is not a usable head file: it is not JSON"
    w = AuditWriter(sealed_db)
    w.start()
    w.close()
    [error] = messages(caplog, logging.ERROR)
    assert "its head file is not a usable head file: it is not JSON" in error
    [kept] = set_aside_heads(sealed_db)
    assert kept.read_text() == "not json"
    assert head_of(sealed_db).seq == 5


# --------------------------------------------------------------------------- while running


def test_newest_rows_deleted_while_running_are_reported(
    writer: AuditWriter, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for n in range(1, 6):
        write_sealed(writer, f"r{n}")
    sealed_5 = head_of(db_path)
    execute(db_path, "DELETE FROM requests WHERE seq >= 4")
    write_sealed(writer, "r6")  # sealed as seq 4, on what is left
    [error] = messages(caplog, logging.ERROR)
    assert "the database ends at seq 3 but the proxy's last seal says 5: rows deleted" in error
    [kept] = set_aside_heads(db_path)
    assert read_head(kept) == sealed_5
    assert head_of(db_path).seq == 4
    [message] = findings(db_path)
    assert message.startswith(f"{kept.name} (set aside): the database ends at seq 4 but")
    write_sealed(writer, "r7")  # the chain grows past the old head, with other rows
    [message] = findings(db_path)
    assert message.startswith(f"{kept.name} (set aside): the row at seq 5 does not have the hash")


def test_a_database_removed_while_running_is_reported(
    writer: AuditWriter, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_sealed(writer, "r1")
    old_id = db_id(db_path)
    remove_database(db_path)
    write_sealed(writer, "r2")  # a new database starts
    assert query(db_path, "SELECT id, seq FROM requests") == [("r2", 1)]
    [error] = messages(caplog, logging.ERROR)
    assert f"belongs to another database (id {old_id};" in error
    assert "the database was replaced" in error
    assert head_of(db_path).database_id == db_id(db_path) != old_id
    [message] = findings(db_path)
    assert f"(id {old_id};" in message and message.endswith("the database was replaced")


def test_another_writer_on_the_same_file_is_not_tampering(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = AuditWriter(db_path), AuditWriter(db_path)
    first.start()
    second.start()
    try:
        for n in range(3):
            write_sealed(first, f"a{n}")
            write_sealed(second, f"b{n}")
    finally:
        first.close()
        second.close()
    assert not messages(caplog, logging.ERROR)
    assert not set_aside_heads(db_path)
    assert verify(db_path).ok


# --------------------------------------------------------------------------- pruning


def test_pruning_moves_the_base_and_keeps_the_head(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = datetime.now(UTC) - timedelta(days=40)
    w = AuditWriter(db_path, prune_batch=2)
    w.start()
    try:
        for n in range(4):
            write_sealed(w, f"old{n}", ts=old)
        write_sealed(w, "new")
        assert w.prune(30).result(10) == 4
        w.flush()
        assert head_of(db_path).seq == 5
        assert verify(db_path).ok
        assert w.prune(0).result(10) == 1  # everything: the head itself is the base now
        w.flush()
        assert query(db_path, "SELECT COUNT(*) FROM requests") == [(0,)]
        assert verify(db_path).ok
    finally:
        w.close()
    again = AuditWriter(db_path)
    again.start()
    write_sealed(again, "later")
    again.close()
    assert not messages(caplog, logging.ERROR)
    assert verify(db_path).ok


def test_a_base_moved_past_the_head_is_reported(sealed_db: Path) -> None:
    execute(sealed_db, "DELETE FROM requests")
    execute(
        sealed_db,
        "INSERT OR REPLACE INTO audit_meta VALUES ('chain_base_seq', '9'), ('chain_base_hash', ?)",
        ("f" * 64,),
    )
    assert verify(sealed_db, head=False).ok  # to the chain alone, an empty pruned database
    [message] = findings(sealed_db)
    assert "its head file says seq 5 but the database's chain starts after seq 9" in message


# --------------------------------------------------------------------------- the pieces


def test_anchor_problem_names_each_case(sealed_db: Path) -> None:
    head = head_of(sealed_db)
    conn = connect_readonly(sealed_db)
    try:
        assert anchor_problem(conn, head) is None
        assert anchor_problem(conn, Head(head.database_id, 3, head.row_hash)) == (
            "the row at seq 3 does not have the hash its head file records"
            f" ({head.row_hash[:16]}…): rows deleted and the chain grown again, or rewritten"
        )
        assert anchor_problem(conn, Head("other", 5, head.row_hash), source="X") == (
            f"X belongs to another database (id other; this one is {head.database_id}):"
            " the database was replaced"
        )
    finally:
        conn.close()
    execute(sealed_db, "DELETE FROM requests WHERE seq = 3")
    conn = connect_readonly(sealed_db)
    try:
        assert anchor_problem(conn, Head(head.database_id, 3, head.row_hash)) == (
            "the row at seq 3, which its head file names, is missing: rows deleted"
        )
    finally:
        conn.close()
    execute(sealed_db, "DELETE FROM audit_meta WHERE key = 'database_id'")
    conn = connect_readonly(sealed_db)
    try:
        assert anchor_problem(conn, head) == (
            f"its head file belongs to database {head.database_id} but this database has no id:"
            " the database was replaced"
        )
    finally:
        conn.close()


def test_a_database_whose_id_was_removed_gets_a_new_one(
    sealed_db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    execute(sealed_db, "DELETE FROM audit_meta WHERE key = 'database_id'")
    w = AuditWriter(sealed_db)
    w.start()
    w.close()
    assert "has no id" in " ".join(messages(caplog, logging.ERROR))
    assert head_of(sealed_db).database_id == db_id(sealed_db)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[]", "it is not a JSON object"),
        ('{"format": 2}', "unknown format 2"),
        ('{"format": 1, "seq": 1, "row_hash": "00"}', "database_id is missing"),
        ('{"format": 1, "database_id": "x", "seq": -1}', "seq is not a count"),
        ('{"format": 1, "database_id": "x", "seq": 1, "row_hash": "00"}', "row_hash is not"),
    ],
)
def test_read_head_says_what_is_wrong(tmp_path: Path, text: str, reason: str) -> None:
    file = tmp_path / "x.head"
    assert read_head(file) is None
    file.write_text(text)
    with pytest.raises(HeadUnreadable, match=reason):
        read_head(file)


def test_set_aside_never_replaces_an_earlier_one(tmp_path: Path) -> None:
    file = tmp_path / "audit.db.head"
    moment = datetime(2025, 1, 31, 9, 5, 7, tzinfo=UTC)
    names = []
    for n in range(3):
        file.write_text(str(n))
        names.append(set_aside(file, moment).name)
    assert names == [
        "audit.db.head.20250131T090507Z",
        "audit.db.head.20250131T090507Z-1",
        "audit.db.head.20250131T090507Z-2",
    ]
    assert [p.read_text() for p in set_aside_heads(tmp_path / "audit.db")] == ["0", "1", "2"]
    assert not file.exists()
