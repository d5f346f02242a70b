"""`lmk audit verify`: what it prints and its exit status, for an intact and a tampered chain."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from llamakey import config
from tests.unit.cli.helpers import lmk


def fake_verify(monkeypatch: pytest.MonkeyPatch, **result: object) -> list[Path]:
    from llamakey import audit

    paths: list[Path] = []

    def verify(path: Path, *, head: bool = True) -> SimpleNamespace:
        paths.append(path)
        defaults = {"problem": None, "head_findings": (), "head_checked": head}
        return SimpleNamespace(**{**defaults, **result})

    monkeypatch.setattr(audit, "verify", verify)
    return paths


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        ("ab12", "ok: 5 rows chained, 1 unfinished, head ab12\n"),
        ("", "ok: 5 rows chained, 1 unfinished\n"),
    ],
)
def test_intact_chain_exits_0(
    cfg: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    head: str,
    expected: str,
) -> None:
    paths = fake_verify(monkeypatch, ok=True, rows_checked=5, unfinished=1, head_hash=head)
    assert lmk(cfg, "audit", "verify") == 0
    assert capsys.readouterr().out == expected
    assert paths == [config.load(cfg).audit_path]


def test_tampered_chain_exits_1_naming_the_row(
    cfg: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_verify(monkeypatch, ok=False, rows_checked=3, first_bad_id=4, problem="altered")
    assert lmk(cfg, "audit", "verify") == 1
    out = capsys.readouterr().out
    assert out == "TAMPERED: row 4 was altered (3 rows checked before it)\n"
