"""`spent_since`: the requests the rate limits and budgets counted, as `lmk status` reads them
from the audit database (read-only): admitted provider requests since a time, with their tokens
summed, None when the usage is not known."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from llamakey.audit import AuditWriter, RequestEnd, RequestStart, spent_since


def test_spent_since_reads_admitted_provider_requests_with_their_tokens(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    writer = AuditWriter(path)
    writer.start()
    old = datetime(2026, 1, 1, tzinfo=UTC)
    recent = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    writer.begin(RequestStart(id="old", ts=old, user="alice", provider="openai")).result(5)
    writer.begin(
        RequestStart(
            id="refused", ts=recent, user="alice", provider="openai", refused_by="budget_exceeded"
        )
    ).result(5)
    writer.begin(RequestStart(id="onboard", ts=recent, user="alice", refused_by=None)).result(5)
    for request_id, user in (("a", "alice"), ("b", "bob"), ("c", "alice")):
        writer.begin(
            RequestStart(
                id=request_id,
                ts=recent,
                user=user,
                provider="openai",
                model="gpt-4o-mini",
                request_bytes=99,
            )
        ).result(5)
    writer.finish(
        "a",
        RequestEnd(status=200, input_tokens=10, output_tokens=5, cache_read_tokens=2, cost_usd=0.5),
    )
    writer.flush()
    writer.close()
    since = datetime(2026, 1, 2, tzinfo=UTC)
    found = {s.user + ":" + str(s.tokens): s for s in spent_since(path, since, ["alice"])}
    assert set(found) == {"alice:17", "alice:None"}  # c: still in flight, usage unknown
    assert found["alice:17"].started == recent.timestamp()
    assert (found["alice:17"].cost_usd, found["alice:None"].cost_usd) == (0.5, None)
    assert found["alice:17"].request_bytes == 99
    assert len(spent_since(path, since)) == 3
