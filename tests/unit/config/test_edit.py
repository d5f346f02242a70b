"""Editing the configuration file: comments and layout kept, saved atomically with its mode."""

from __future__ import annotations

import os
import shutil
import stat
import tomllib
from pathlib import Path

import pytest
import tomlkit

from llamakey import config
from llamakey.config import edit
from tests.unit.builders import ALICE_KEY, sha
from tests.unit.config.helpers import SHIPPED, comments, is_subsequence

ALICE_SHA = sha(ALICE_KEY)
BOB_SHA = "b" * 64


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    """A copy of the shipped, commented configuration."""
    path = tmp_path / "lmk_config.toml"
    shutil.copyfile(SHIPPED, path)
    return path


def add(path: Path, name: str, key_sha256: str, *groups: str) -> None:
    doc = edit.open_document(path)
    edit.add_user(doc, name, key_sha256, groups)
    edit.save_document(path, doc)


def remove(path: Path, name: str) -> None:
    doc = edit.open_document(path)
    edit.remove_user(doc, name)
    edit.save_document(path, doc)


def test_add_user_keeps_every_comment_and_line(cfg: Path) -> None:
    original = cfg.read_text(encoding="utf-8")
    add(cfg, "alice", ALICE_SHA, "research", "ops")
    add(cfg, "bob", BOB_SHA)
    text = cfg.read_text(encoding="utf-8")

    assert len(comments(original)) > 10  # the shipped file is documented inline
    assert comments(text) == comments(original)
    assert is_subsequence(original.splitlines(), text.splitlines())
    data = tomllib.loads(text)
    assert data["users"] == {
        "alice": {"key_sha256": ALICE_SHA, "groups": ["research", "ops"]},
        "bob": {"key_sha256": BOB_SHA},  # no groups key for a user without groups
    }
    assert data["groups"] == {"research": {}, "ops": {}}
    users = config.load(cfg).users_by_hash
    assert (users[ALICE_SHA].name, users[ALICE_SHA].groups) == ("alice", ("research", "ops"))


def test_add_user_reuses_an_existing_group_table(cfg: Path) -> None:
    text = cfg.read_text(encoding="utf-8").replace(
        "[groups]\n", '[groups]\nresearch = { description = "the lab" }\n', 1
    )
    cfg.write_text(text, encoding="utf-8")
    add(cfg, "alice", ALICE_SHA, "research")
    assert tomllib.loads(cfg.read_text(encoding="utf-8"))["groups"] == {
        "research": {"description": "the lab"}
    }


def test_add_then_remove_gives_back_the_same_text(cfg: Path) -> None:
    original = cfg.read_text(encoding="utf-8")
    add(cfg, "bob", BOB_SHA)
    assert cfg.read_text(encoding="utf-8") != original
    remove(cfg, "bob")
    assert cfg.read_text(encoding="utf-8") == original


def test_remove_user_keeps_comments_other_users_and_groups(cfg: Path) -> None:
    original = cfg.read_text(encoding="utf-8")
    add(cfg, "alice", ALICE_SHA, "research")
    add(cfg, "bob", BOB_SHA, "research")
    remove(cfg, "alice")
    text = cfg.read_text(encoding="utf-8")
    assert comments(text) == comments(original)
    assert ALICE_SHA not in text
    data = tomllib.loads(text)
    assert set(data["users"]) == {"bob"}
    assert set(data["groups"]) == {"research"}  # groups outlive their members


def test_add_user_into_a_file_without_users_or_groups(tmp_path: Path) -> None:
    path = tmp_path / "minimal.toml"
    path.write_text("# minimal\n[proxy]\nlisten_port = 9000 # ours\n", encoding="utf-8")
    add(path, "alice", ALICE_SHA, "research")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# minimal\n[proxy]\nlisten_port = 9000 # ours\n")
    data = tomllib.loads(text)
    assert data["users"]["alice"] == {"key_sha256": ALICE_SHA, "groups": ["research"]}
    assert data["groups"] == {"research": {}}
    assert config.load(path).file.proxy.listen_port == 9000


def test_add_existing_user_is_refused_and_the_document_unchanged(cfg: Path) -> None:
    add(cfg, "alice", ALICE_SHA)
    doc = edit.open_document(cfg)
    before = tomlkit.dumps(doc)
    with pytest.raises(edit.UserExistsError, match=r"users\.alice exists"):
        edit.add_user(doc, "alice", BOB_SHA, ["newgroup"])
    assert tomlkit.dumps(doc) == before
    assert isinstance(edit.UserExistsError("x"), config.ConfigError)


def test_remove_missing_user_is_refused(cfg: Path) -> None:
    doc = edit.open_document(cfg)
    with pytest.raises(edit.NoSuchUserError, match="no user 'alice'"):
        edit.remove_user(doc, "alice")
    empty = tomlkit.document()  # no [users] table at all
    with pytest.raises(edit.NoSuchUserError):
        edit.remove_user(empty, "alice")


def test_open_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(config.ConfigError, match="no such file") as caught:
        edit.open_document(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o664])
def test_save_keeps_the_file_mode(cfg: Path, mode: int) -> None:
    cfg.chmod(mode)
    add(cfg, "alice", ALICE_SHA)
    assert stat.S_IMODE(cfg.stat().st_mode) == mode
    remove(cfg, "alice")
    assert stat.S_IMODE(cfg.stat().st_mode) == mode


def test_save_replaces_the_file_in_one_rename(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str]] = []
    real_replace = os.replace

    def replace(src: str, dst: str, *, src_dir_fd: int, dst_dir_fd: int) -> None:
        # At the rename, the new text is complete in the temporary file, the old one untouched.
        def read(name: str, fd: int) -> str:
            opened = os.open(name, os.O_RDONLY, dir_fd=fd)
            with os.fdopen(opened, encoding="utf-8") as handle:
                return handle.read()

        seen.append((read(src, src_dir_fd), read(dst, dst_dir_fd)))
        real_replace(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

    original = cfg.read_text(encoding="utf-8")
    monkeypatch.setattr(os, "replace", replace)
    add(cfg, "alice", ALICE_SHA)
    ((new, old),) = seen
    assert old == original
    assert new == cfg.read_text(encoding="utf-8")
    assert ALICE_SHA in new
    assert sorted(p.name for p in cfg.parent.iterdir()) == [cfg.name]  # no temporary left


def test_failed_write_leaves_the_file_and_no_temporary(
    cfg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = cfg.read_bytes()
    doc = edit.open_document(cfg)
    edit.add_user(doc, "alice", ALICE_SHA)

    def replace(src: str, dst: str, **dir_fds: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="No space"):
        edit.save_document(cfg, doc)
    assert cfg.read_bytes() == original
    assert sorted(p.name for p in cfg.parent.iterdir()) == [cfg.name]


def test_save_refuses_an_invalid_document_and_keeps_the_file(cfg: Path) -> None:
    original = cfg.read_bytes()
    doc = edit.open_document(cfg)
    doc["proxy"]["listen_port"] = "eighty"
    with pytest.raises(config.ConfigError) as caught:
        edit.save_document(cfg, doc)
    message = str(caught.value)
    assert message.startswith("not saved: ")
    assert "proxy.listen_port" in message and str(cfg) in message
    assert cfg.read_bytes() == original
    assert sorted(p.name for p in cfg.parent.iterdir()) == [cfg.name]


def test_save_replaces_a_planted_symlink_instead_of_writing_through_it(cfg: Path) -> None:
    victim = cfg.parent / "victim.txt"
    victim.write_text("theirs", encoding="utf-8")
    original = cfg.read_text(encoding="utf-8")
    cfg.unlink()
    cfg.symlink_to(victim)
    victim.write_text(original, encoding="utf-8")
    add(cfg, "alice", ALICE_SHA)
    assert not cfg.is_symlink()
    assert victim.read_text(encoding="utf-8") == original  # untouched
    assert ALICE_SHA in cfg.read_text(encoding="utf-8")
