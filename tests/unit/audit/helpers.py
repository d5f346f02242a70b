"""Builders and checks shared by the audit tests. Every check reads the database through a
separate sqlite3 connection, the way an admin would."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from llamakey.audit import AuditWriter, RequestEnd, RequestStart

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def row(request_id: str, **fields: Any) -> RequestStart:
    """A typical write-ahead row; keyword arguments override or add fields."""
    base: dict[str, Any] = {
        "user": "alice",
        "groups": ("eng",),
        "client_addr": "10.0.0.7",
        "provider": "openai",
        "host": "api.openai.com",
        "method": "POST",
        "path": "/v1/chat/completions",
        "model": "gpt-4o",
        "stream": True,
        "request_bytes": 321,
    }
    base.update(fields)
    return RequestStart(id=request_id, **base)


def done(**fields: Any) -> RequestEnd:
    """A completion (fields as keywords, untyped so tests can pass wrong ones)."""
    return RequestEnd(**fields)


def query(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
    """Run ``sql`` on a fresh connection, as an admin's sqlite3 shell would."""
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


def execute(path: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(sql, params)


def full_row(path: Path, request_id: str) -> dict[str, Any]:
    with closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        found = conn.execute("SELECT * FROM requests WHERE id = ?", (request_id,)).fetchone()
        assert found is not None, request_id
        return dict(found)


def write_sealed(w: AuditWriter, request_id: str, **fields: Any) -> None:
    """begin + finish one row and wait until both are committed."""
    w.begin(row(request_id, **fields)).result(5)
    w.finish(request_id, done(status=200, input_tokens=10, output_tokens=2, cost_usd=0.01))
    w.flush()
