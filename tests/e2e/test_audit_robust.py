"""The audit log holds under failure: nothing is served unaudited when SQLite cannot be written,
kill -9 under load loses no row of a request that went upstream, and tampering is detected."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_gateway
from tests.e2e.test_audit import client, rows
from tests.harness import Gateway, run_lmk, wait_until
from tests.mock_upstream import MockUpstream


@pytest.fixture
def own_gateway(tmp_path: Path, mock: MockUpstream) -> Iterator[Gateway]:
    gw = make_gateway(tmp_path, mock)
    gw.start()
    yield gw
    gw.stop()


def chat(
    http: httpx.Client, gateway: Gateway, model: str = "gpt-4o-mini", **headers: str
) -> httpx.Response:
    return http.post(
        "https://api.openai.com/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {gateway.keys['alice']}", **headers},
    )


def test_unwritable_audit_log_refuses_with_503_and_recovers(
    own_gateway: Gateway, mock: MockUpstream
) -> None:
    with client(own_gateway) as http:
        assert chat(http, own_gateway).status_code == 200  # the database exists now
        locker = sqlite3.connect(own_gateway.audit_db, timeout=0.1)
        locker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        mock.clear()
        try:
            refused = chat(http, own_gateway)
        finally:
            locker.rollback()
            locker.close()
        assert refused.status_code == 503
        assert "audit log" in refused.json()["error"]["message"]
        assert mock.seen == [], "a request went upstream without its audit row"
        deadline = time.monotonic() + 10
        while (ok := chat(http, own_gateway)).status_code != 200:  # recovers by itself
            assert time.monotonic() < deadline, ok.text
            time.sleep(0.2)


def test_kill_9_under_load_leaves_a_row_for_every_request_upstream(
    own_gateway: Gateway, mock: MockUpstream
) -> None:
    mock.clear()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        with client(own_gateway) as http:
            for i in range(50):
                try:
                    chat(http, own_gateway, model=f"load-{n}-{i}", **{"x-mock-chunk-delay": "0.01"})
                except httpx.HTTPError as error:  # the proxy dies under us: expected
                    errors.append(error)
                    return

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(mock.seen) >= 60 or errors, "60 requests at the mock", timeout=60)
    assert not errors, errors
    assert own_gateway.process is not None
    os.kill(own_gateway.process.pid, signal.SIGKILL)
    for thread in threads:
        thread.join(30)
    # A request cut off by the kill reaches the mock with a truncated body: it has no model to
    # match, but it still needs a row of its own (counted below).
    complete = [s for s in mock.seen if s.body.endswith(b"}")]
    upstream = {json.loads(s.body)["model"] for s in complete}
    audited = {r["model"] for r in rows(own_gateway.audit_db)}
    assert len(upstream) >= 60
    assert upstream <= audited, (
        f"requests served without an audit row: {sorted(upstream - audited)[:5]}"
    )
    assert errors, "the kill happened after all requests had finished"
    assert len(rows(own_gateway.audit_db)) >= len(mock.seen)


def test_audit_verify_names_the_altered_and_the_deleted_row(
    own_gateway: Gateway, tmp_path: Path
) -> None:
    with client(own_gateway) as http:
        for n in range(5):
            assert chat(http, own_gateway, model=f"verify-{n}").status_code == 200
    wait_until(
        lambda: len(rows(own_gateway.audit_db, "completed_ts is not null")) == 5,
        "the five rows to be completed",
    )
    own_gateway.stop()
    assert run_lmk(own_gateway.config, "audit", "verify").returncode == 0
    pristine = sqlite3.connect(":memory:")
    with sqlite3.connect(own_gateway.audit_db) as conn:
        conn.backup(pristine)
    with sqlite3.connect(own_gateway.audit_db) as conn:
        [(victim,)] = conn.execute("select id from requests where model = 'verify-2'")
        conn.execute("update requests set cost_usd = 0 where id = ?", (victim,))
    result = run_lmk(own_gateway.config, "audit", "verify")
    assert result.returncode == 1 and victim in result.stdout and "altered" in result.stdout

    with sqlite3.connect(own_gateway.audit_db) as conn:
        pristine.backup(conn)  # undo the edit
    assert run_lmk(own_gateway.config, "audit", "verify").returncode == 0
    with sqlite3.connect(own_gateway.audit_db) as conn:
        conn.execute("delete from requests where model = 'verify-2'")
        [(following,)] = conn.execute("select id from requests where model = 'verify-3'")
    result = run_lmk(own_gateway.config, "audit", "verify")
    assert result.returncode == 1 and "deleted" in result.stdout
    assert following in result.stdout


def test_bodies_logged_with_credentials_redacted(tmp_path: Path, mock: MockUpstream) -> None:
    gw = make_gateway(tmp_path, mock, audit_table={"log_bodies": True})
    gw.start()
    try:
        with client(gw) as http:
            response = http.post(
                "https://api.openai.com/v1/chat/completions",
                json={
                    "model": "gpt-4o-mini",
                    "api_key": "sk-pasted-into-the-body-0123456789",
                    "messages": [{"role": "user", "content": f"my key is {gw.keys['bob']}"}],
                },
                headers={"authorization": f"Bearer {gw.keys['alice']}"},
            )
        assert response.status_code == 200
        wait_until(lambda: bodies_stored(gw.audit_db) == 1, "the bodies row")
    finally:
        gw.stop()
    with sqlite3.connect(gw.audit_db) as conn:
        [(request_body, response_body)] = conn.execute(
            "select request_body, response_body from bodies"
        )
    sent = json.loads(request_body)
    assert sent["api_key"] == "[redacted]"
    assert sent["model"] == "gpt-4o-mini"
    # bob's key pasted into alice's prompt was masked before the request went upstream.
    assert gw.keys["bob"] not in request_body
    assert "my key is " + "*" * len(gw.keys["bob"]) in request_body
    assert not any(gw.keys["bob"].encode() in seen.body for seen in mock.seen)
    assert "Hello" in response_body


def test_audit_path_change_on_reload_moves_to_the_new_database(
    tmp_path: Path, mock: MockUpstream
) -> None:
    gw = make_gateway(tmp_path, mock)
    gw.start()
    try:
        with client(gw) as http:
            assert chat(http, gw, model="before-move").status_code == 200
            gw.config.write_text(gw.config.read_text().replace('"audit.db"', '"moved.db"'))
            moved = tmp_path / "moved.db"
            deadline = time.monotonic() + 10
            while not moved.exists():  # the first request after the reload opens it
                assert time.monotonic() < deadline, gw.log.read_text()
                assert chat(http, gw, model="after-move").status_code == 200
                time.sleep(0.3)
            assert chat(http, gw, model="after-move").status_code == 200
            time.sleep(0.5)
        assert {r["model"] for r in rows(moved)} == {"after-move"}
        assert "before-move" in {r["model"] for r in rows(gw.audit_db)}
    finally:
        gw.stop()


def bodies_stored(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        try:
            (count,) = conn.execute("select count(*) from bodies").fetchone()
        except sqlite3.OperationalError:  # the table is made with the first bodies
            return 0
        return int(count)
