"""The snapshot `lmk audit browse` serves: taken while the proxy's writer holds the database
open, it has every committed row (those still in the WAL too), is one self-contained 0600
file, and taking it writes nothing to the source."""

from __future__ import annotations

import hashlib
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from llamakey.audit import AuditWriter
from llamakey.browse.server import BrowseError, snapshot
from tests.browsing import KNOWN_ROWS, write_known_rows
from tests.unit.audit.helpers import write_sealed


def ids(path: Path) -> list[str]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM requests ORDER BY ts, id")]


def test_a_snapshot_under_a_running_writer_has_its_committed_rows(tmp_path: Path) -> None:
    source = tmp_path / "lmk_audit.db"
    writer = AuditWriter(source)
    writer.start()
    try:
        for i in range(5):
            write_sealed(writer, f"r{i}", user="alice")
        # The rows are committed to the WAL; the main file need not hold them yet.
        assert Path(f"{source}-wal").stat().st_size > 0
        copy = tmp_path / "copy" / "lmk_audit.db"
        copy.parent.mkdir()
        snapshot(source, copy)
        write_sealed(writer, "after", user="alice")  # the writer carries on, unblocked
    finally:
        writer.close()
    assert ids(copy) == [f"r{i}" for i in range(5)]
    assert copy.stat().st_mode & 0o777 == 0o600
    with closing(sqlite3.connect(copy)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert not Path(f"{copy}-wal").exists()
    assert "after" in ids(source)


def test_taking_a_snapshot_writes_nothing_to_the_source(tmp_path: Path) -> None:
    source = write_known_rows(tmp_path / "lmk_audit.db")
    before = (hashlib.sha256(source.read_bytes()).hexdigest(), source.stat().st_mtime_ns)
    snapshot(source, tmp_path / "copy.db")
    assert (hashlib.sha256(source.read_bytes()).hexdigest(), source.stat().st_mtime_ns) == before
    assert sorted(ids(tmp_path / "copy.db")) == sorted(start.id for start, _ in KNOWN_ROWS)


def test_a_missing_source_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(BrowseError, match="no audit database at"):
        snapshot(tmp_path / "missing.db", tmp_path / "copy.db")
    assert not (tmp_path / "missing.db").exists()


def test_an_existing_target_is_never_overwritten(tmp_path: Path) -> None:
    source = write_known_rows(tmp_path / "lmk_audit.db")
    target = tmp_path / "there.db"
    target.write_text("keep")
    with pytest.raises(FileExistsError):
        snapshot(source, target)
    assert target.read_text() == "keep"
