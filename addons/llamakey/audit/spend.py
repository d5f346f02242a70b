"""What the audit database says was spent since a moment: the read side of rebuilding the
rules' counters after a restart (`llamakey.rules.rebuild`, `llamakey.steps.rebuild`).

One aggregate per user, groups, provider and model, over the rows that went upstream (or may
have: ``refused_by`` NULL), begun at or after ``since``. A row with no usage recorded (still
in flight, a proxy killed mid-request, an answer without usage) and a row with no cost are
counted apart, with their input estimate (request bytes / 4), so the rebuild can charge them
what a live reservation keeps: the worst case.

Blocking: call it off the event loop. The connection is read-only (the proxy's writer is never
waited for: WAL readers do not block it).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llamakey.audit.rows import format_ts
from llamakey.audit.schema import connect_readonly
from llamakey.rules.rebuild import Spend

__all__ = ["spend_since"]

_METERED = (
    "(input_tokens IS NOT NULL OR output_tokens IS NOT NULL"
    " OR cache_read_tokens IS NOT NULL OR cache_write_tokens IS NOT NULL)"
)
_INPUT_ESTIMATE = "(coalesce(request_bytes, 0) + 3) / 4"  # integers: SQLite divides exactly

_SPEND_SQL = f"""
SELECT "user", "groups", provider, model,
       count(*),
       coalesce(sum(CASE WHEN {_METERED} THEN coalesce(input_tokens, 0)
            + coalesce(output_tokens, 0) + coalesce(cache_read_tokens, 0)
            + coalesce(cache_write_tokens, 0) END), 0),
       coalesce(sum(NOT {_METERED}), 0),
       coalesce(sum(CASE WHEN NOT {_METERED} THEN {_INPUT_ESTIMATE} END), 0),
       coalesce(sum(cost_usd), 0.0),
       coalesce(sum(cost_usd IS NULL), 0),
       coalesce(sum(CASE WHEN cost_usd IS NULL THEN {_INPUT_ESTIMATE} END), 0)
FROM requests
WHERE ts >= ? AND refused_by IS NULL AND "user" IS NOT NULL
GROUP BY 1, 2, 3, 4
"""


def spend_since(path: Path, starts: Iterable[int]) -> dict[int, list[Spend]]:
    """For each epoch second in `starts`, the spend recorded at `path` from then on. No
    database, or one without its tables yet: nothing spent. Raises `sqlite3.Error` for a file
    that cannot be read."""
    wanted = sorted(set(starts))
    try:
        connection = connect_readonly(path)
    except FileNotFoundError:
        return {start: [] for start in wanted}
    try:
        result: dict[int, list[Spend]] = {}
        for start in wanted:
            since = format_ts(datetime.fromtimestamp(start, UTC))
            try:
                rows = connection.execute(_SPEND_SQL, (since,)).fetchall()
            except sqlite3.OperationalError as error:
                if "no such table" in str(error):  # a database the writer has not built yet
                    return {start: [] for start in wanted}
                raise
            result[start] = [_spend(row) for row in rows]
        return result
    finally:
        connection.close()


def _spend(row: tuple[Any, ...]) -> Spend:
    user, groups, provider, model, requests, tokens, unmetered, unmetered_in = row[:8]
    cost, unpriced, unpriced_in = row[8:]
    try:
        parsed = json.loads(groups) if isinstance(groups, str) else []
    except ValueError:
        parsed = []
    return Spend(
        user=str(user),
        groups=tuple(g for g in parsed if isinstance(g, str)) if isinstance(parsed, list) else (),
        provider=str(provider) if provider is not None else "",
        model=str(model) if model is not None else None,
        requests=int(requests),
        tokens=int(tokens),
        unmetered=int(unmetered),
        unmetered_input=int(unmetered_in),
        usd=float(cost),
        unpriced=int(unpriced),
        unpriced_input=int(unpriced_in),
    )
