"""The chain head anchored outside the database, end to end: a real gateway's newest rows
deleted after it stopped, and its database deleted while it runs, are both named by
`lmk audit verify` (and the second by the proxy's log), where the chain alone looks intact."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from tests.conftest import make_gateway
from tests.e2e.test_audit import client, rows
from tests.e2e.test_audit_robust import chat
from tests.harness import Gateway, run_lmk, wait_until
from tests.mock_upstream import MockUpstream


def completed(gateway: Gateway, models: set[str]) -> bool:
    if not gateway.audit_db.exists():
        return False
    done = {r["model"] for r in rows(gateway.audit_db, "completed_ts is not null")}
    return models <= done


def database_id(db: Path) -> str:
    with closing(sqlite3.connect(db)) as conn:
        [(value,)] = conn.execute("select value from audit_meta where key = 'database_id'")
    return str(value)


def test_newest_rows_deleted_after_a_stop_are_named_by_verify(
    tmp_path: Path, mock: MockUpstream
) -> None:
    gw = make_gateway(tmp_path, mock)
    gw.start()
    try:
        models = {f"anchor-{n}" for n in range(5)}
        with client(gw) as http:
            for model in sorted(models):
                assert chat(http, gw, model=model).status_code == 200
        wait_until(lambda: completed(gw, models), "the five rows to be sealed")
    finally:
        gw.stop()
    result = run_lmk(gw.config, "audit", "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok: 5 rows chained")

    with closing(sqlite3.connect(gw.audit_db)) as conn, conn:
        conn.execute("delete from requests where seq > 3")
    assert run_lmk(gw.config, "audit", "verify", "--no-head").returncode == 0  # chain alone: ok
    result = run_lmk(gw.config, "audit", "verify")
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == (
        "TAMPERED: audit.db.head: the database ends at seq 3 but its head file says 5: rows deleted"
    )


def test_a_database_deleted_while_serving_is_named_by_the_log_and_verify(
    tmp_path: Path, mock: MockUpstream
) -> None:
    gw = make_gateway(tmp_path, mock)
    gw.start()
    try:
        with client(gw) as http:
            assert chat(http, gw, model="before-1").status_code == 200
            assert chat(http, gw, model="before-2").status_code == 200
            wait_until(lambda: completed(gw, {"before-1", "before-2"}), "the first rows")
            old_id = database_id(gw.audit_db)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{gw.audit_db}{suffix}").unlink(missing_ok=True)
            # The proxy keeps serving: a new database starts under the same name.
            for n in range(3):
                assert chat(http, gw, model=f"after-{n}").status_code == 200
            wait_until(lambda: completed(gw, {f"after-{n}" for n in range(3)}), "new rows")
        assert {r["model"] for r in rows(gw.audit_db)} == {f"after-{n}" for n in range(3)}
        new_id = database_id(gw.audit_db)
        assert new_id != old_id
        log = gw.log.read_text()
        assert f"head of database {gw.audit_db} (id {old_id}): seq 0" in log  # at start
        [error] = [line for line in log.splitlines() if "does not hold its recorded head" in line]
        assert f"belongs to another database (id {old_id}; this one is {new_id})" in error
        assert "the database was replaced" in error
    finally:
        gw.stop()
    result = run_lmk(gw.config, "audit", "verify")
    assert result.returncode == 1, result.stdout
    [kept] = sorted(p.name for p in tmp_path.glob("audit.db.head.*"))
    assert result.stdout.splitlines()[-1] == (
        f"TAMPERED: {kept} (set aside): its head file belongs to another database"
        f" (id {old_id}; this one is {new_id}): the database was replaced"
    )
    # The new database's own chain and head are intact.
    assert run_lmk(gw.config, "audit", "verify", "--no-head").returncode == 0
