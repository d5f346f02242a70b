"""Typed audit rows: :class:`RequestStart`, written ahead of the request, and
:class:`RequestEnd`, which completes it when the flow ends.

Each field is one column of table ``requests``, with the column's name and a precise type, so a
misspelt column or a wrong value is a type error (mypy, and :class:`InvalidRow` when the row is
built) instead of a column silently left out. The two rows cover every content column between
them; the chain columns (``seq``, ``prev_hash``, ``row_hash``) belong to the writer and appear
in neither. ``refused_by`` is in both: a refusal can be known before the request (a blocked
host) or only at its end.

Values are checked when a row is built, since the data path fills rows from untyped flow
metadata. :class:`InvalidRow` is an :class:`~llamakey.audit.sink.AuditUnavailable`: a request
whose row cannot be stored is refused like one whose database is down (nothing unaudited goes
out), and it is a ``TypeError``, which is what it is. Its message names the field, never the
value, since values may be sensitive.

Conversion to what SQLite stores lives here too (:meth:`RequestStart.sql_values`,
:meth:`RequestEnd.sql_values`): timestamps as :func:`format_ts` text, groups as a JSON list,
booleans as 0/1, ``path`` without its query string or fragment.
"""

from __future__ import annotations

import json
import math
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Final, get_args, get_type_hints

from llamakey.audit.sink import AuditUnavailable

__all__ = ["InvalidRow", "RequestEnd", "RequestStart", "SqlValue", "format_ts"]

type SqlValue = str | int | float | None


class InvalidRow(AuditUnavailable, TypeError):
    """A row field holds a value its column cannot take (raised when the row is built)."""


def format_ts(moment: datetime) -> str:
    """Format ``moment`` as UTC ISO-8601 with milliseconds and ``Z``: ``2025-01-31T09:05:07.042Z``.

    A naive datetime is taken to be UTC. Every timestamp in the database uses this form, so text
    comparison orders them correctly.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestStart:
    """The write-ahead row: committed before the request goes upstream (``begin``)."""

    id: str  # the mitmproxy flow id, the primary key
    ts: datetime = field(default_factory=_now)
    user: str | None = None
    groups: tuple[str, ...] | None = None  # stored as a JSON list; None stores NULL
    client_addr: str | None = None
    provider: str | None = None
    host: str | None = None
    method: str | None = None
    path: str | None = None  # stored without query string or fragment (they carry keys)
    model: str | None = None
    stream: bool | None = None
    request_bytes: int | None = None
    refused_by: str | None = None

    def __post_init__(self) -> None:
        _check(self, _START_FIELDS)
        if not self.id:
            raise InvalidRow("audit row rejected: id must be a non-empty string")

    def sql_values(self) -> dict[str, SqlValue]:
        """Every column of the row, as SQLite stores it (NULL for None)."""
        return {name: _to_sql(name, getattr(self, name)) for name in _START_COLUMNS}


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestEnd:
    """The completion, written when the flow ends (``finish``) in the transaction that seals
    the row into the hash chain. A field left None leaves its column as ``begin`` wrote it."""

    status: int | None = None
    refused_by: str | None = None
    error: str | None = None
    latency_ms: float | None = None
    ttfb_ms: float | None = None
    response_bytes: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_usd: float | None = None
    provider_cost_usd: float | None = None
    response_model: str | None = None
    finish_reason: str | None = None
    client_disconnected: bool | None = None
    # True when the tokens were estimated, not reported by the provider (column added by m002).
    usage_estimated: bool | None = None
    # The rule that cut a streamed answer off while it flowed (column added by m004).
    cut_by: str | None = None
    # The deployment that served a routed request, and the JSON list of attempts (m005_routing).
    deployment: str | None = None
    attempts: str | None = None
    completed_ts: datetime = field(default_factory=_now)

    def __post_init__(self) -> None:
        _check(self, _END_FIELDS)

    def sql_values(self) -> dict[str, SqlValue]:
        """The columns this completion sets (those not None), as SQLite stores them."""
        values: dict[str, SqlValue] = {}
        for name in _END_COLUMNS:
            value = getattr(self, name)
            if value is not None:
                values[name] = _to_sql(name, value)
        return values


# --------------------------------------------------------------------------- checks


def _finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _strings(value: object) -> bool:
    return isinstance(value, tuple) and all(isinstance(item, str) for item in value)


#: Field type -> (test, what the message says it must be). ``bool`` is an ``int`` to Python, so
#: the integer and number tests turn it away explicitly.
_ACCEPTS: Final[Mapping[object, tuple[Callable[[object], bool], str]]] = {
    str: (lambda v: isinstance(v, str), "a string"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    float: (_finite_number, "a finite number"),
    bool: (lambda v: isinstance(v, bool), "a bool"),
    datetime: (lambda v: isinstance(v, datetime), "a datetime"),
    tuple[str, ...]: (_strings, "a tuple of strings"),
}

#: (field, declared type without None, None allowed), in field order.
type _Fields = tuple[tuple[str, object, bool], ...]


def _fields_of(cls: type) -> _Fields:
    """Every field of ``cls`` with the type its annotation declares."""
    hints = get_type_hints(cls)
    out = []
    for f in fields(cls):
        hint = hints[f.name]
        options = set(get_args(hint)) if isinstance(hint, types.UnionType) else {hint}
        (kind,) = options - {type(None)}
        out.append((f.name, kind, type(None) in options))
    return tuple(out)


#: The exact types that pass each test at once (the common case, checked without a call).
_EXACT: Final[Mapping[object, tuple[type, ...]]] = {
    str: (str,),
    int: (int,),
    bool: (bool,),
    datetime: (datetime,),
}


def _check(row: RequestStart | RequestEnd, declared: _Fields) -> None:
    for name, kind, optional in declared:
        value = getattr(row, name)
        if (value is None and optional) or type(value) in _EXACT.get(kind, ()):
            continue
        test, expected = _ACCEPTS[kind]
        if not test(value):
            raise InvalidRow(
                f"audit row rejected: {name} must be {expected}{' or None' if optional else ''}"
            )


_START_FIELDS: Final = _fields_of(RequestStart)
_END_FIELDS: Final = _fields_of(RequestEnd)
_START_COLUMNS: Final = tuple(name for name, _, _ in _START_FIELDS)
_END_COLUMNS: Final = tuple(name for name, _, _ in _END_FIELDS)
_REAL_COLUMNS: Final = frozenset(
    name for name, kind, _ in (*_START_FIELDS, *_END_FIELDS) if kind is float
)
_QUERY_OR_FRAGMENT: Final = re.compile(r"[?#]")


def _to_sql(column: str, value: object) -> SqlValue:
    """``value`` of a checked row as SQLite stores it."""
    if value is None or isinstance(value, str | float):
        if column == "path" and isinstance(value, str):
            # Query strings can carry credentials (e.g. Gemini's ?key=); never store them.
            return _QUERY_OR_FRAGMENT.split(value, maxsplit=1)[0]
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        # An int for a REAL column is stored as a float, as SQLite would.
        return float(value) if column in _REAL_COLUMNS else value
    if isinstance(value, datetime):
        return format_ts(value)
    if isinstance(value, tuple):
        return json.dumps(list(value), ensure_ascii=False)
    raise InvalidRow(f"audit row rejected: {column} has no SQL form")  # unreachable once checked
