"""`lmk usage`: the report comes from the audit store; without a database, a clear error."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import pytest

from llamakey import config
from tests.unit.cli.helpers import lmk, lmk_fails


def test_usage_without_an_audit_database_names_its_path(cfg: Path) -> None:
    audit_path = config.load(cfg).audit_path
    assert not audit_path.exists()
    message = lmk_fails(cfg, "usage")
    assert message == (
        f"lmk: no audit database at {audit_path} yet: the proxy creates it on its first start "
        f"(`lmk serve`), or set audit.path in {cfg.resolve()} to where it is"
    )


def test_usage_with_auditing_off_says_so(cfg: Path) -> None:
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text.replace("enabled = true", "enabled = false", 1), encoding="utf-8")
    message = lmk_fails(cfg, "usage")
    assert "auditing is off (audit.enabled = false in" in message


def test_usage_of_a_file_that_is_no_database_is_one_line(cfg: Path) -> None:
    audit_path = config.load(cfg).audit_path
    audit_path.write_text("not a database\n" * 100, encoding="utf-8")
    message = lmk_fails(cfg, "usage")
    assert message.startswith(f"lmk: cannot read the audit database {audit_path}: ")
    assert "\n" not in message


@pytest.mark.parametrize("since", ["yesterday", "7", "-3d", "last week"])
def test_usage_since_in_an_unknown_format_names_the_accepted_ones(
    cfg: Path, since: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:  # said before any database is looked for
        lmk(cfg, "usage", f"--since={since}")
    assert caught.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        f"lmk: --since {since!r} is not a time: use 7d, 24h, 30m or an ISO date or time "
        "(2025-01-31, 2025-01-31T12:00Z)"
    )


def test_usage_passes_since_by_and_format(
    cfg: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from llamakey import audit

    audit_path = config.load(cfg).audit_path
    audit_path.write_bytes(b"")  # exists: the report itself is faked
    since = datetime(2025, 1, 1)
    calls: list[tuple[str, object]] = []

    def parse_since(text: str) -> datetime:
        calls.append(("parse_since", text))
        return since

    def usage_report(path: Path, *, since: datetime | None, by: str) -> Mapping[str, object]:
        calls.append(("usage_report", (path, since, by)))
        return {"report": 1}

    def format_report(report: Mapping[str, object], fmt: str, *, by: str) -> str:
        calls.append(("format_report", (report, fmt, by)))
        return "THE REPORT"

    monkeypatch.setattr(audit, "parse_since", parse_since)
    monkeypatch.setattr(audit, "usage_report", usage_report)
    monkeypatch.setattr(audit, "format_report", format_report)
    assert lmk(cfg, "usage", "--since", "7d", "--by", "model", "--format", "json") == 0
    assert capsys.readouterr().out == "THE REPORT\n"
    assert calls == [
        ("parse_since", "7d"),
        ("usage_report", (audit_path, since, "model")),
        ("format_report", ({"report": 1}, "json", "model")),
    ]
    calls.clear()
    assert lmk(cfg, "usage") == 0  # defaults: everything, by user, as a table
    assert calls[0] == ("usage_report", (audit_path, None, "user"))
    assert calls[1] == ("format_report", ({"report": 1}, "table", "user"))


@pytest.mark.parametrize(
    ("flag", "value"), [("--by", "week"), ("--format", "xml")], ids=["by", "format"]
)
def test_usage_refuses_an_unknown_choice(
    cfg: Path, flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        lmk(cfg, "usage", flag, value)
    assert caught.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
