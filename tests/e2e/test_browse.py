"""`lmk audit browse` for real: a real `lmk audit browse` process and its real Datasette on a
free loopback port, read over HTTP. Every canned query answers right through Datasette's JSON
API on known rows; nothing is reachable without the printed address; a running gateway's
database is served as a snapshot; stopping removes the snapshot."""

from __future__ import annotations

import hashlib
import http.cookiejar
import socket
import sqlite3
import ssl
import urllib.error
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from llamakey.browse.gate import TOKEN_PARAM, cookie_name
from llamakey.browse.metadata import canned_queries, load_metadata
from tests.browsing import (
    EXPECTED,
    QUERY_PARAMS,
    Browse,
    Client,
    opener,
    project,
    write_known_rows,
)
from tests.conftest import make_gateway
from tests.harness import Gateway, wait_until
from tests.mock_upstream import MockUpstream

QUERIES = canned_queries(load_metadata())


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browse]:
    """`lmk audit browse` on the known rows, in a database not named as the default."""
    workdir = tmp_path_factory.mktemp("browse")
    browse = Browse(workdir, db=write_known_rows(workdir / "audit.db"))
    browse.start()
    yield browse
    browse.stop()


@pytest.fixture(scope="module")
def client(known: Browse) -> Client:
    return Client(known)


def test_it_prints_an_address_on_loopback_with_a_token(known: Browse, client: Client) -> None:
    assert known.url.startswith(f"http://127.0.0.1:{known.port}/audit?{TOKEN_PARAM}=")
    assert "read-only snapshot of " + str(known.db) in known.text()
    assert client.landed == f"{known.base}/audit"  # the token is gone from the address


@pytest.mark.parametrize("name", list(QUERIES))
def test_each_canned_query_answers_right_over_http(client: Client, name: str) -> None:
    rows = client.query("audit", name, **QUERY_PARAMS.get(name, {}))
    assert project(rows, EXPECTED[name]) == EXPECTED[name]


def test_the_queries_carry_their_titles_and_descriptions(client: Client) -> None:
    page = client.json("/audit.json")
    listed = {q["name"]: q for q in page["queries"]}
    assert list(listed) == list(QUERIES)
    for name, query in QUERIES.items():
        assert listed[name]["title"] == query["title"]
        assert listed[name]["description"] == query["description"]
        assert listed[name]["sql"] == query["sql"]
    html = client.get("/audit/user_day").decode()
    assert 'name="user"' in html and 'name="day"' in html  # the parameters' form
    assert client.json("/-/metadata.json")["title"] == "LlaMaKey audit log"


def test_it_serves_a_copy_immutable_not_the_file(known: Browse, client: Client) -> None:
    [database] = [d for d in client.json("/-/databases.json") if d["name"] == "audit"]
    assert database["is_mutable"] is False
    served = Path(database["path"])
    assert served.name == "audit.db" and served.parent.parent == known.tmpdir
    # Ad-hoc SQL is read-only too.
    with pytest.raises(urllib.error.HTTPError):
        client.get("/audit.json?sql=DELETE+FROM+requests")


@pytest.mark.parametrize(
    "path", ["/", "/audit", "/audit/requests.json", "/audit/spend_by_user.json", "/-/metadata"]
)
def test_nothing_is_served_without_the_printed_address(known: Browse, path: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        opener().open(known.base + path, timeout=30)
    assert caught.value.code == 403
    with pytest.raises(urllib.error.HTTPError) as caught:
        opener().open(f"{known.base}{path}?{TOKEN_PARAM}=guess", timeout=30)
    assert caught.value.code == 403


def test_the_login_cookie_is_the_ports_own_httponly_and_strict(known: Browse) -> None:
    jar = http.cookiejar.CookieJar()
    opener(jar).open(known.url, timeout=30).close()
    [cookie] = list(jar)
    assert cookie.name == cookie_name(known.port) and cookie.domain == "127.0.0.1"
    assert cookie.has_nonstandard_attr("HttpOnly") and cookie.expires is None  # session only
    assert cookie.get_nonstandard_attr("SameSite") == "Strict"


def test_stopping_removes_the_snapshot_and_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    db = write_known_rows(tmp_path / "lmk_audit.db")
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    browse = Browse(tmp_path / "run", db=db)
    browse.start()
    try:
        assert Client(browse).query("lmk_audit", "spend_by_user") == EXPECTED["spend_by_user"]
        assert len(list(browse.tmpdir.iterdir())) == 1  # the snapshot's directory
    finally:
        status = browse.stop()
    assert status == 0
    assert list(browse.tmpdir.iterdir()) == []
    with closing(socket.socket()) as probe:  # Datasette is gone with it
        assert probe.connect_ex(("127.0.0.1", browse.port)) != 0
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_a_running_gateways_database_is_browsed_as_of_the_start(
    tmp_path: Path, mock: MockUpstream
) -> None:
    gateway = make_gateway(tmp_path / "gateway", mock)
    gateway.start()
    try:
        for user in ("alice", "alice", "bob"):
            assert call(gateway, user).status_code == 200
        assert call(gateway, None).status_code == 401  # an unknown master key: refused
        wait_until(lambda: completed(gateway.audit_db) == 4, "four completed audit rows")
        assert {r["user"] for r in read(gateway.audit_db, "SELECT * FROM requests")} == {
            "alice",
            "bob",
            None,
        }

        # Default database (the gateway's configured audit.path), while the proxy has it open.
        browse = Browse(tmp_path / "browse", config=gateway.config)
        browse.start()
        try:
            client = Client(browse)
            by_user = {r["user"]: r for r in client.query("audit", "spend_by_user")}
            expected = read(
                gateway.audit_db,
                'SELECT "user", count(*) AS n, sum(cost_usd) AS usd, sum(output_tokens) AS out'
                ' FROM requests GROUP BY "user"',
            )
            assert {u: (r["requests"], r["output_tokens"]) for u, r in by_user.items()} == {
                e["user"]: (e["n"], e["out"] or 0) for e in expected
            }
            for e in expected:
                assert by_user[e["user"]]["cost_usd"] == pytest.approx(e["usd"] or 0.0)
            assert by_user["alice"]["cost_usd"] > 0
            [refusal] = client.query("audit", "refusals_by_rule")
            assert (refusal["rule"], refusal["requests"]) == ("unknown_master_key", 1)

            # A request after the start is in the live file, not in the snapshot.
            assert call(gateway, "bob").status_code == 200
            wait_until(lambda: completed(gateway.audit_db) == 5, "a fifth audit row")
            again = {r["user"]: r for r in client.query("audit", "spend_by_user")}
            assert again["bob"]["requests"] == by_user["bob"]["requests"]
        finally:
            assert browse.stop() == 0
    finally:
        gateway.stop()


def call(gateway: Gateway, user: str | None) -> httpx.Response:
    bundle = gateway.workdir / "certs" / "client-bundle.pem"
    key = gateway.keys[user] if user else "lmk_" + "x" * 43
    with httpx.Client(
        proxy=f"http://127.0.0.1:{gateway.port}",
        timeout=30,
        verify=ssl.create_default_context(cafile=str(bundle)),
    ) as http:
        return http.post(
            "https://api.openai.com/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {key}"},
        )


def read(db: Path, sql: str) -> list[dict[str, object]]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql)]


def completed(db: Path) -> int:
    if not db.exists():
        return 0
    [found] = read(db, "SELECT count(*) AS n FROM requests WHERE completed_ts IS NOT NULL")
    count = found["n"]
    assert isinstance(count, int)
    return count
