"""The audit log: one flat SQLite file that answers "who spent what, on which model, when, and
what was refused" with plain SQL, written ahead of every request and sealed into a hash chain.

This module is the public surface; one concern per module behind it:

``sink``     :class:`AuditSink`, what the gateway's audit step needs, and
             :class:`AuditUnavailable`, the one error it handles (a 503)
``rows``     the typed rows :class:`RequestStart` (write-ahead) and :class:`RequestEnd`
             (completion), their checks (:class:`InvalidRow`) and their SQL values
``writer``   :class:`BatchWriter`: the writer thread, queue, group commit and recovery, for
             any :class:`Backend`
``backend``  :class:`Backend`, what a store implements, and the work items it is handed
``sqlite``   :class:`SQLiteBackend`, the file itself, and :class:`AuditWriter`, the sink the
             proxy runs (a :class:`BatchWriter` over it)
``schema``   the tables, built by named and recorded migrations (:func:`ensure_schema`)
``chain``    tamper evidence: :func:`row_digest`, :func:`verify` (``lmk audit verify``)
``anchor``   the chain head outside the database: the head file beside it, the head logged,
             and the check that the database still holds it (:func:`anchor_problem`)
``report``   ``lmk usage``: :func:`usage_report`, :func:`format_report`, :func:`parse_since`;
             ``lmk status``: :func:`spent_since`
``memory``   :class:`MemorySink`, a stand-in for unit tests
"""

from llamakey.audit.anchor import (
    HEAD_LOG_INTERVAL_S,
    Head,
    HeadFinding,
    anchor_problem,
    head_path,
    read_head,
)
from llamakey.audit.backend import Backend
from llamakey.audit.chain import (
    GENESIS_HASH,
    MissingDatabase,
    UnreadableDatabase,
    VerifyResult,
    row_digest,
    verify,
)
from llamakey.audit.memory import MemorySink
from llamakey.audit.report import (
    REPORT_COLUMNS,
    format_report,
    parse_since,
    spent_since,
    usage_report,
)
from llamakey.audit.rows import InvalidRow, RequestEnd, RequestStart, format_ts
from llamakey.audit.schema import MIGRATIONS, REQUEST_COLUMNS, SCHEMA_VERSION, ensure_schema
from llamakey.audit.sink import AuditSink, AuditUnavailable
from llamakey.audit.sqlite import AuditWriter, SQLiteBackend
from llamakey.audit.writer import BatchWriter

__all__ = [
    "GENESIS_HASH",
    "HEAD_LOG_INTERVAL_S",
    "MIGRATIONS",
    "REPORT_COLUMNS",
    "REQUEST_COLUMNS",
    "SCHEMA_VERSION",
    "AuditSink",
    "AuditUnavailable",
    "AuditWriter",
    "Backend",
    "BatchWriter",
    "Head",
    "HeadFinding",
    "InvalidRow",
    "MemorySink",
    "MissingDatabase",
    "RequestEnd",
    "RequestStart",
    "SQLiteBackend",
    "UnreadableDatabase",
    "VerifyResult",
    "anchor_problem",
    "ensure_schema",
    "format_report",
    "format_ts",
    "head_path",
    "parse_since",
    "read_head",
    "row_digest",
    "spent_since",
    "usage_report",
    "verify",
]
