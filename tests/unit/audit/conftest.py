"""Fixtures of the audit tests: a database path under tmp_path, a running writer, and
databases prepared with sealed rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llamakey.audit import AuditWriter
from tests.unit.audit.helpers import row, write_sealed


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "audit" / "audit.db"


@pytest.fixture
def writer(db_path: Path) -> Iterator[AuditWriter]:
    w = AuditWriter(db_path, group_commit_ms=1.0, busy_timeout_ms=100)
    w.start()
    yield w
    w.close()


@pytest.fixture
def sealed_db(db_path: Path) -> Path:
    """Five sealed rows r1..r5 and one unfinished row, writer closed."""
    w = AuditWriter(db_path)
    w.start()
    for i in range(1, 6):
        write_sealed(w, f"r{i}", user=f"user{i}")
    w.begin(row("inflight")).result(5)
    w.close()
    return db_path
