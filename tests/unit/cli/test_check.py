"""`lmk check`: a summary of a valid file, the TOML path of an error, never a key."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamakey.providers import BUILTIN_PROVIDERS
from tests.unit.cli.helpers import lmk, lmk_fails, new_key


def test_check_summarises_a_valid_file(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = "sk-proj-CLIcheckKEY0123456789abcdefghij"
    monkeypatch.setenv("OPENAI_API_KEY", real)
    assert lmk(cfg, "check") == 0
    out = capsys.readouterr().out
    assert f"{cfg.resolve()}: valid" in out
    lines = out.splitlines()
    for name in BUILTIN_PROVIDERS:
        assert any(line.split()[:1] == [name] for line in lines), name
    (openai,) = [line for line in lines if line.split()[:1] == ["openai"]]
    assert "api.openai.com" in openai and "1 key(s)" in openai
    (groq,) = [line for line in lines if line.split()[:1] == ["groq"]]
    assert "NO KEY" in groq and "GROQ_API_KEY" in groq
    assert real not in out


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("listen_port = 8080", 'listen_port = "eighty"', ["proxy.listen_port", "'eighty'"]),
        ("retention_days = 0", "retention_days = 0\nbogus = 1", ["audit.bogus", "unknown key"]),
        ('other_hosts = "tunnel"', 'other_hosts = "deny"', ["proxy.other_hosts", "'deny'"]),
        ("[users]", "[users]\nalice = 3", ["users.alice"]),
        ("[proxy]", "[proxy", ["not valid TOML"]),
    ],
)
def test_check_broken_file_fails_naming_the_toml_path(
    cfg: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, expected: list[str]
) -> None:
    text = cfg.read_text(encoding="utf-8")
    assert old in text
    cfg.write_text(text.replace(old, new, 1), encoding="utf-8")
    message = lmk_fails(cfg, "check")
    assert str(cfg) in message
    for part in expected:
        assert part in message
    assert "valid\n" not in capsys.readouterr().out


def test_check_never_prints_a_master_key_pasted_as_provider_key(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = new_key(cfg, capsys, "alice")
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text.replace('keys = ["${OPENAI_API_KEY}"]', f'keys = ["{key}"]'), "utf-8")
    assert lmk(cfg, "check") == 0
    out = capsys.readouterr().out
    assert "master key" in out
    assert key not in out
