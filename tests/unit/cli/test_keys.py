"""`lmk keys new/list/revoke`, in-process against a copy of the shipped lmk_config.toml."""

from __future__ import annotations

import re
import stat
import tomllib
from pathlib import Path

import pytest

from llamakey import config
from tests.unit.cli.helpers import lmk, lmk_fails, new_key, sha256
from tests.unit.config.helpers import comments, is_subsequence


def test_keys_new_prints_key_once_and_stores_only_its_hash(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = cfg.read_text(encoding="utf-8")
    assert lmk(cfg, "keys", "new", "alice", "--group", "research") == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert re.fullmatch(r"lmk_[A-Za-z0-9_-]{43}", key)
    assert out == key + "\n"  # the key alone on stdout: `KEY=$(lmk keys new alice)` works
    assert key not in err
    assert "lmk env alice" in err

    text = cfg.read_text(encoding="utf-8")
    assert key not in text
    assert key[4:] not in text
    data = tomllib.loads(text)
    assert data["users"]["alice"] == {"key_sha256": sha256(key), "groups": ["research"]}
    assert data["groups"]["research"] == {}

    # Every comment, and every original line, is still there in order.
    assert len(comments(original)) > 10  # the shipped file is documented inline
    assert comments(text) == comments(original)
    assert is_subsequence(original.splitlines(), text.splitlines())

    # The proxy accepts the file, and the key is alice's.
    settings = config.load(cfg)
    user = settings.users_by_hash[sha256(key)]
    assert (user.name, user.groups, user.disabled) == ("alice", ("research",), False)


def test_keys_new_twice_fails_and_keeps_the_file(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new_key(cfg, capsys, "alice", "research")
    before = cfg.read_bytes()
    message = lmk_fails(cfg, "keys", "new", "alice")
    assert "users.alice exists" in message
    assert cfg.read_bytes() == before
    assert capsys.readouterr().out == ""  # no second key printed


def test_keys_new_each_user_gets_a_distinct_key(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = new_key(cfg, capsys, "alice", "research")
    bob = new_key(cfg, capsys, "bob", "ops", "research")
    assert alice != bob
    data = tomllib.loads(cfg.read_text(encoding="utf-8"))
    assert data["users"]["bob"] == {"key_sha256": sha256(bob), "groups": ["ops", "research"]}
    assert set(data["groups"]) == {"research", "ops"}
    carol = new_key(cfg, capsys, "carol")
    assert "groups" not in tomllib.loads(cfg.read_text(encoding="utf-8"))["users"]["carol"]
    assert len(config.load(cfg).users_by_hash) == 3
    assert len({alice, bob, carol}) == 3


def test_keys_list_and_revoke(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    original = cfg.read_text(encoding="utf-8")
    alice = new_key(cfg, capsys, "alice", "research")
    new_key(cfg, capsys, "bob")

    assert lmk(cfg, "keys", "list") == 0
    out = capsys.readouterr().out
    (alice_line,) = [line for line in out.splitlines() if line.startswith("alice ")]
    assert "active" in alice_line
    assert "research" in alice_line
    assert sha256(alice)[:12] in alice_line
    assert alice not in out
    assert any(line.startswith("bob ") for line in out.splitlines())

    assert lmk(cfg, "keys", "revoke", "alice") == 0
    assert "revoked alice" in capsys.readouterr().out
    text = cfg.read_text(encoding="utf-8")
    assert "alice" not in tomllib.loads(text)["users"]
    assert sha256(alice) not in text
    assert comments(text) == comments(original)
    assert sha256(alice) not in config.load(cfg).users_by_hash

    assert lmk(cfg, "keys", "list") == 0
    out = capsys.readouterr().out
    assert not any(line.startswith("alice ") for line in out.splitlines())
    assert any(line.startswith("bob ") for line in out.splitlines())

    assert "no user 'alice'" in lmk_fails(cfg, "keys", "revoke", "alice")


def test_keys_new_and_revoke_keep_the_file_mode(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg.chmod(0o600)
    new_key(cfg, capsys, "alice")
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert lmk(cfg, "keys", "revoke", "alice") == 0
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600


def test_keys_new_and_revoke_on_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    assert lmk_fails(missing, "keys", "new", "alice") == f"lmk: {missing}: no such file"
    assert lmk_fails(missing, "keys", "revoke", "alice") == f"lmk: {missing}: no such file"
    assert not missing.exists()


def test_keys_new_does_not_save_into_an_invalid_file(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text.replace("listen_port = 8080", 'listen_port = "x"'), encoding="utf-8")
    before = cfg.read_bytes()
    message = lmk_fails(cfg, "keys", "new", "alice")
    assert message.startswith(f"lmk: not saved: {cfg}: invalid configuration")
    assert "proxy.listen_port" in message
    assert cfg.read_bytes() == before
    assert capsys.readouterr().out == ""  # no key handed out for a user that was not saved
