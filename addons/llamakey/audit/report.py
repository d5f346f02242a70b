"""Reading the audit database for people: ``lmk usage`` (:func:`usage_report`,
:func:`format_report`, :func:`parse_since`) and the requests the rules counted, for ``lmk
status`` (:func:`spent_since`).

Reports open the file read-only (``mode=ro``), so they can run while the proxy writes, and
never create a missing file. Usage is aggregated in SQL from the ``requests`` table alone.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from llamakey.audit.rows import format_ts
from llamakey.audit.schema import connect_readonly
from llamakey.rules.usage_now import Spent

__all__ = ["REPORT_COLUMNS", "format_report", "parse_since", "spent_since", "usage_report"]

#: Columns of every :func:`usage_report` row, in order.
REPORT_COLUMNS: Final = (
    "key",
    "requests",
    "refused",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "unpriced",
)

_REPORT_KEYS: Final[Mapping[str, tuple[str, str]]] = {
    "user": ('r."user"', ""),
    "provider": ("r.provider", ""),
    # The model the client asked for; the response's when the request named none.
    "model": ("COALESCE(r.model, r.response_model)", ""),
    "day": ("substr(r.ts, 1, 10)", ""),
    # A request counts once for each of its user's groups; no groups -> NULL key.
    "group": (
        "g.value",
        'LEFT JOIN json_each(CASE WHEN json_valid(r."groups") THEN r."groups" ELSE \'[]\' END)'
        " AS g",
    ),
}


# A row that should have had a price and has none (see usage_report).
_UNPRICED: Final = (
    "r.cost_usd IS NULL AND r.refused_by IS NULL AND r.status BETWEEN 200 AND 299"
    " AND COALESCE(r.input_tokens, 0) + COALESCE(r.output_tokens, 0)"
    " + COALESCE(r.cache_read_tokens, 0) + COALESCE(r.cache_write_tokens, 0) > 0"
)


def usage_report(path: Path, *, since: datetime | None, by: str) -> list[dict[str, object]]:
    """Aggregate usage for ``lmk usage``, grouped ``by`` ``user``, ``group``, ``provider``,
    ``model`` or ``day`` (UTC), for requests with ``ts >= since`` (all when None).

    Each row has :data:`REPORT_COLUMNS`: ``key`` (None when the column is NULL), ``requests``,
    ``refused`` (rows with ``refused_by``), token sums, ``cost_usd`` (sum of known costs) and
    ``unpriced``: rows that should have had a price and have none, i.e. successful (2xx) calls
    not refused, with tokens, whose cost is NULL. A refused or failed request, one still in
    flight, or one that reports no tokens (``GET /v1/models``) has nothing to price, so it is
    not counted. By group, a request counts in each of its groups.
    Days are sorted by date, everything else by cost then request count, descending. Opens the
    database read-only.
    """
    if by not in _REPORT_KEYS:
        raise ValueError(f"cannot group by {by!r}: use one of {', '.join(_REPORT_KEYS)}")
    key, join = _REPORT_KEYS[by]
    order = "key" if by == "day" else "cost_usd DESC, requests DESC, key"
    sql = f"""
        SELECT {key} AS key,
               COUNT(*) AS requests,
               COALESCE(SUM(r.refused_by IS NOT NULL), 0) AS refused,
               COALESCE(SUM(r.input_tokens), 0) AS input_tokens,
               COALESCE(SUM(r.output_tokens), 0) AS output_tokens,
               COALESCE(SUM(r.cache_read_tokens), 0) AS cache_read_tokens,
               COALESCE(SUM(r.cache_write_tokens), 0) AS cache_write_tokens,
               COALESCE(SUM(r.cost_usd), 0.0) AS cost_usd,
               COALESCE(SUM({_UNPRICED}), 0) AS unpriced
        FROM requests AS r {join}
        {"" if since is None else "WHERE r.ts >= ?"}
        GROUP BY 1
        ORDER BY {order}
    """
    params = () if since is None else (format_ts(since),)
    conn = connect_readonly(path)
    try:
        cursor = conn.execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, values, strict=True)) for values in cursor]
    finally:
        conn.close()


def spent_since(path: Path, since: datetime, users: Collection[str] | None = None) -> list[Spent]:
    """The provider requests that started at or after `since` and were not refused (what the
    rate limits and budgets counted: `rules.usage_now`), of `users` only when given, oldest
    first. Opens the database read-only."""
    where = 'ts >= ? AND refused_by IS NULL AND provider IS NOT NULL AND "user" IS NOT NULL'
    params: list[object] = [format_ts(since)]
    if users is not None:
        where += f' AND "user" IN ({", ".join("?" * len(users))})'
        params += list(users)
    sql = f"""
        SELECT "user", provider, model, ts, input_tokens, output_tokens, cache_read_tokens,
               cache_write_tokens, COALESCE(request_bytes, 0), cost_usd
        FROM requests WHERE {where} ORDER BY ts
    """
    conn = connect_readonly(path)
    try:
        return [
            Spent(
                user=user,
                provider=provider,
                model=model,
                started=datetime.fromisoformat(ts).timestamp(),
                tokens=None if all(n is None for n in tokens) else sum(n or 0 for n in tokens),
                request_bytes=int(size),
                cost_usd=None if cost is None else float(cost),
            )
            for user, provider, model, ts, *tokens, size, cost in conn.execute(sql, params)
        ]
    finally:
        conn.close()


# How each kind of column is shown: costs to a fixed precision (a sum of floats is never
# printed as 0.00038877000000000003), counts and tokens as integers.
COST_DECIMALS: Final = 6


def _clean(column: str, value: object) -> object:
    """A report value as people read it: costs rounded to :data:`COST_DECIMALS` places, every
    other number an integer (SQLite sums integers to integers; a REAL slipped in is made one)."""
    if column == "key" or value is None or isinstance(value, str | bool):
        return value
    if column.endswith("_usd") and isinstance(value, int | float):
        return round(float(value), COST_DECIMALS)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _cell(column: str, value: object) -> str:
    if value is None:
        return ""
    if column.endswith("_usd") and isinstance(value, float):
        return f"{value:.{COST_DECIMALS}f}"
    return str(value)


def format_report(rows: list[dict[str, object]], fmt: str, *, by: str | None = None) -> str:
    """Render report rows as ``"table"`` (aligned text), ``"csv"`` (with header) or ``"json"``.

    The first column is headed by what the rows were grouped ``by`` (``user``, ``group``, ...)
    when given, else ``key``. Costs are shown with :data:`COST_DECIMALS` decimals (CSV and table
    in fixed notation, JSON as numbers rounded so), counts and tokens as integers; the table
    shows a NULL key as ``(none)``, CSV as an empty cell, JSON as null.
    """
    columns = list(rows[0]) if rows else list(REPORT_COLUMNS)
    heading = {c: (by if c == "key" and by else c) for c in columns}
    clean = [{heading[c]: _clean(c, row.get(c)) for c in columns} for row in rows]
    names = [heading[c] for c in columns]
    if fmt == "json":
        return json.dumps(clean, indent=2, ensure_ascii=False)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([_cell(c, row[heading[c]]) for c in columns] for row in clean)
        return out.getvalue()
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}: use table, csv or json")
    cells = [
        [
            "(none)" if c == "key" and row[heading[c]] is None else _cell(c, row[heading[c]])
            for c in columns
        ]
        for row in clean
    ]
    numeric = [
        bool(clean) and all(isinstance(r[heading[c]], int | float) for r in clean) for c in columns
    ]
    widths = [max([len(n), *(len(line[i]) for line in cells)]) for i, n in enumerate(names)]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    lines = [line(names), line(["-" * w for w in widths]), *(line(c) for c in cells)]
    return "\n".join(lines) + "\n"


_RELATIVE = re.compile(r"\s*(\d+)\s*([dhm])\s*", re.IGNORECASE)
_UNITS: Final = {"d": "days", "h": "hours", "m": "minutes"}


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """Read ``7d``, ``24h``, ``30m`` (before ``now``, default the current time) or an ISO date
    or datetime (``2025-01-31``, ``2025-01-31T12:00Z``; naive means UTC). Returns an aware UTC
    datetime; raises ``ValueError`` otherwise."""
    match = _RELATIVE.fullmatch(text)
    if match:
        amount, unit = int(match[1]), _UNITS[match[2].lower()]
        return (now or datetime.now(UTC)).astimezone(UTC) - timedelta(**{unit: amount})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"cannot read {text!r} as a time: use 7d, 24h, 30m or an ISO date like 2025-01-31"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
