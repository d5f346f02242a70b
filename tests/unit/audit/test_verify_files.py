"""`lmk audit verify` on a file that is not a readable audit database, or on no file at all: one
line ``lmk: …`` naming the file and why, exit status 1, no traceback; and what it prints about
the head file."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from llamakey.audit import (
    AuditWriter,
    MissingDatabase,
    UnreadableDatabase,
    head_path,
    verify,
)
from llamakey.cli import main
from tests.harness import run_lmk
from tests.unit.audit.helpers import execute, query, write_sealed


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "lmk_config.toml"
    path.write_text('[audit]\npath = "audit/audit.db"\n')
    return path


def lmk_verify(config: Path, *args: str) -> int:
    return int(main(["--config", str(config), "audit", "verify", *args]))


def verify_fails(config: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run verify, which must exit 1 with one line; return that line."""
    with pytest.raises(SystemExit) as caught:
        lmk_verify(config)
    message = str(caught.value.code)
    assert isinstance(caught.value.code, str)  # SystemExit(str): printed to stderr, status 1
    assert message.startswith("lmk: ") and "\n" not in message
    assert capsys.readouterr().out == ""
    return message


def sealed(db: Path, rows: int = 5) -> Path:
    w = AuditWriter(db)
    w.start()
    for n in range(rows):
        write_sealed(w, f"r{n}", model="m" * 200)
    w.close()
    return db


def test_garbage_bytes(config: Path, db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db_path.parent.mkdir()
    db_path.write_bytes(os.urandom(8192))
    assert verify_fails(config, capsys) == (
        f"lmk: {db_path} is not a readable audit database: it is not an SQLite database"
    )


def test_an_empty_file(config: Path, db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db_path.parent.mkdir()
    db_path.touch()
    assert verify_fails(config, capsys) == (
        f"lmk: {db_path} is not a readable audit database: the file is empty"
    )
    assert db_path.stat().st_size == 0  # not turned into a database


def test_a_truncated_database(
    config: Path, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    size = sealed(db_path, rows=300).stat().st_size
    os.truncate(db_path, size // 2)
    assert verify_fails(config, capsys) == (
        f"lmk: {db_path} is not a readable audit database: it is truncated"
        f" ({size // 2} bytes of the {size} its header says)"
    )


def test_a_truncated_database_sqlite_notices(db_path: Path) -> None:
    size = sealed(db_path, rows=300).stat().st_size
    os.truncate(db_path, size // 2)
    with db_path.open("r+b") as handle:  # a header whose page count does not count
        handle.seek(92)
        handle.write(b"\0\0\0\0")
    with pytest.raises(UnreadableDatabase, match="database disk image is malformed"):
        verify(db_path)


def test_an_sqlite_file_without_the_requests_table(
    config: Path, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db_path.parent.mkdir()
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    assert verify_fails(config, capsys) == (
        f"lmk: {db_path} is not a readable audit database: it has no requests table"
    )


def test_a_requests_table_that_is_not_ours(db_path: Path) -> None:
    db_path.parent.mkdir()
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute("CREATE TABLE requests (url TEXT)")
    with pytest.raises(UnreadableDatabase, match="no such column: seq"):
        verify(db_path)


def test_a_directory(config: Path, db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db_path.mkdir(parents=True)
    assert verify_fails(config, capsys) == (
        f"lmk: {db_path} is not a readable audit database: it is not a regular file"
    )


def test_a_missing_database(
    config: Path, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert verify_fails(config, capsys) == f"lmk: no audit database at {db_path}"
    assert not db_path.exists() and not db_path.parent.exists()


def test_a_deleted_database_whose_head_file_is_left(
    config: Path, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sealed(db_path)
    [(identity,)] = query(db_path, "SELECT value FROM audit_meta WHERE key = 'database_id'")
    db_path.unlink()
    assert verify_fails(config, capsys) == (
        f"lmk: no audit database at {db_path}, but its head file audit.db.head says it held"
        f" database {identity} up to seq 5: the database was deleted"
    )
    with pytest.raises(MissingDatabase):
        verify(db_path, head=False)


def test_the_real_command_prints_one_line_and_no_traceback(config: Path, db_path: Path) -> None:
    db_path.parent.mkdir()
    db_path.write_bytes(b"SQLite format 3\x00" + os.urandom(4000))
    result = run_lmk(config, "audit", "verify")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"lmk: {db_path} is not a readable audit database: ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- head findings


def test_rows_deleted_from_the_end(
    config: Path, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sealed(db_path)
    assert lmk_verify(config) == 0
    assert capsys.readouterr().out.startswith("ok: 5 rows chained, 0 unfinished, head ")
    execute(db_path, "DELETE FROM requests WHERE seq > 3")
    assert lmk_verify(config) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("chain intact: 3 rows chained, 0 unfinished, head ")
    assert out[1:] == [
        "TAMPERED: audit.db.head: the database ends at seq 3 but its head file says 5: rows deleted"
    ]
    assert lmk_verify(config, "--no-head") == 0
    assert capsys.readouterr().out.endswith(" (head file not checked)\n")


def test_a_missing_head_file_fails_unless_no_head(
    config: Path, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sealed(db_path)
    head_path(db_path).unlink()
    assert lmk_verify(config) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("UNANCHORED: there is no head file audit.db.head although")
    assert "--no-head" in out[2]
    assert lmk_verify(config, "--no-head") == 0


def test_a_broken_chain_and_a_head_finding_are_both_printed(
    config: Path, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sealed(db_path)
    execute(db_path, "UPDATE requests SET cost_usd = 0 WHERE seq = 2")
    execute(db_path, "DELETE FROM requests WHERE seq = 5")
    assert lmk_verify(config) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("TAMPERED: row r1 was altered")
    assert out[1] == (
        "TAMPERED: audit.db.head: the database ends at seq 4 but its head file says 5: rows deleted"
    )
