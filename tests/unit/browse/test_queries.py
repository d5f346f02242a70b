"""The canned queries of `lmk audit browse` (llamakey/audit/datasette.yaml): each answers right
on an audit database with known rows, the spend ones as `lmk usage` counts, and each is the
README's recipe of the same name, SQL for SQL."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from llamakey.audit import usage_report
from llamakey.browse import DEFAULT_DATABASE
from llamakey.browse.metadata import canned_queries, load_metadata, metadata_for
from tests.browsing import (
    EXPECTED,
    METADATA_FILE,
    QUERY_PARAMS,
    README,
    project,
    readme_recipes,
    write_known_rows,
)

QUERIES = canned_queries(load_metadata())


@pytest.fixture(scope="module")
def known_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_known_rows(tmp_path_factory.mktemp("known") / "lmk_audit.db")


def run(db: Path, sql: str, params: dict[str, str]) -> list[dict[str, Any]]:
    """``sql`` on a read-only connection, as the sqlite3 shell or Datasette would run it."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql, params)]


def test_the_shipped_file_is_what_is_loaded() -> None:
    import yaml

    assert load_metadata() == yaml.safe_load(METADATA_FILE.read_text(encoding="utf-8"))


def test_every_query_has_a_title_a_description_and_known_answers() -> None:
    assert list(QUERIES) == list(EXPECTED), "a new canned query needs its answers in EXPECTED"
    for name, query in QUERIES.items():
        assert query["title"].strip() and query["description"].strip(), name
        assert not query["sql"].rstrip().endswith(";"), name


@pytest.mark.parametrize("name", list(QUERIES))
def test_each_query_answers_right_on_known_rows(known_db: Path, name: str) -> None:
    rows = run(known_db, QUERIES[name]["sql"], QUERY_PARAMS.get(name, {}))
    assert project(rows, EXPECTED[name]) == EXPECTED[name]


@pytest.mark.parametrize(
    ("name", "by", "key"),
    [
        ("spend_by_user", "user", "user"),
        ("spend_by_group", "group", "group"),
        ("spend_by_model", "model", "model"),
        ("spend_by_day", "day", "day"),
    ],
)
def test_spend_queries_count_as_lmk_usage_does(
    known_db: Path, name: str, by: str, key: str
) -> None:
    canned = run(known_db, QUERIES[name]["sql"], {})
    report = [
        {key if k == "key" else k: v for k, v in r.items()}
        for r in usage_report(known_db, since=None, by=by)
    ]
    assert [{**r, "cost_usd": pytest.approx(r["cost_usd"])} for r in canned] == report


def test_one_users_day_is_that_user_on_that_day_only(known_db: Path) -> None:
    sql = QUERIES["user_day"]["sql"]
    assert [r["id"] for r in run(known_db, sql, {"user": "alice", "day": "2025-01-02"})] == ["a2"]
    assert [r["id"] for r in run(known_db, sql, {"user": "alice", "day": "2025-01-03"})] == ["a3"]
    # Datasette's form starts with empty parameters; a day that is not a date matches nothing.
    assert run(known_db, sql, {"user": "", "day": ""}) == []
    assert run(known_db, sql, {"user": "bob", "day": "yesterday"}) == []
    assert QUERIES["user_day"]["params"] == ["user", "day"]


def test_the_readme_recipes_are_the_canned_queries() -> None:
    recipes = readme_recipes(README.read_text(encoding="utf-8"))
    assert list(recipes) == list(QUERIES)
    for name, (title, sql) in recipes.items():
        assert title == QUERIES[name]["title"], name
        assert sql == QUERIES[name]["sql"].strip(), f"README recipe {name} differs from the query"


def test_metadata_is_filed_under_the_served_database_name() -> None:
    shipped = load_metadata()
    moved = metadata_for("audit")
    assert list(moved["databases"]) == ["audit"]
    assert moved["databases"]["audit"] == shipped["databases"][DEFAULT_DATABASE]
    assert moved["title"] == shipped["title"]
    assert metadata_for(DEFAULT_DATABASE) == shipped
    assert list(shipped["databases"]) == [DEFAULT_DATABASE]  # unchanged
