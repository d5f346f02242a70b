"""Editing the users file (and the config): comments and layout kept, validated before it is
saved, written atomically, the users file always mode 0600."""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import tomllib
from datetime import date
from pathlib import Path

import pytest
import tomlkit

from llamakey import config
from llamakey.config import edit
from tests.unit.builders import ALICE_KEY, sha
from tests.unit.config.helpers import SHIPPED, comments, is_subsequence

ALICE_SHA = sha(ALICE_KEY)
BOB_SHA = "b" * 64

GROUPS = '\n[groups]\nresearch = { description = "the lab" }\nops = {}\n'

COMMENTED = f"""\
# Our users (kept out of git).

[users.zoe]  # since 2024
key_sha256 = "{"a" * 64}"  # rotated in March
groups = ["research"]

# Contractors.
[users.yann]
key_sha256 = "{"c" * 64}"
expires = 2099-01-01  # end of contract
"""


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    """A copy of the shipped, commented configuration, with groups research and ops."""
    path = tmp_path / "lmk_config.toml"
    shutil.copyfile(SHIPPED, path)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("\n[groups]\n", GROUPS, 1), encoding="utf-8")
    return path


@pytest.fixture
def users(cfg: Path) -> Path:
    return cfg.parent / config.DEFAULT_USERS_NAME


def save(cfg: Path, users: Path, doc: tomlkit.TOMLDocument) -> None:
    file = config.read_config(cfg)
    edit.save_users(users, doc, file, cfg)


def add(cfg: Path, users: Path, name: str, key_sha256: str, *groups: str) -> None:
    doc = edit.open_users(users)
    edit.add_user(doc, name, key_sha256, groups)
    save(cfg, users, doc)


def remove(cfg: Path, users: Path, name: str) -> edit.Removed:
    doc = edit.open_users(users)
    removed = edit.remove_user(doc, name)
    save(cfg, users, doc)
    return removed


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_users_file_has_its_header_and_mode_0600(cfg: Path, users: Path) -> None:
    config_before = cfg.read_bytes()
    add(cfg, users, "alice", ALICE_SHA, "research", "ops")
    add(cfg, users, "bob", BOB_SHA)
    text = users.read_text(encoding="utf-8")
    assert text.startswith(edit.USERS_HEADER)
    assert mode(users) == 0o600
    assert tomllib.loads(text) == {
        "users": {
            "alice": {"key_sha256": ALICE_SHA, "groups": ["research", "ops"]},
            "bob": {"key_sha256": BOB_SHA},  # no groups key for a user without groups
        }
    }
    assert cfg.read_bytes() == config_before  # the tracked config is never written
    users_by_hash = config.load(cfg).users_by_hash
    assert (users_by_hash[ALICE_SHA].name, users_by_hash[ALICE_SHA].groups) == (
        "alice",
        ("research", "ops"),
    )


def test_edits_keep_every_comment_and_line(cfg: Path, users: Path) -> None:
    users.write_text(COMMENTED, encoding="utf-8")
    add(cfg, users, "alice", ALICE_SHA, "research")
    text = users.read_text(encoding="utf-8")
    assert comments(text) == comments(COMMENTED)
    assert is_subsequence(COMMENTED.splitlines(), text.splitlines())

    doc = edit.open_users(users)
    edit.set_key(doc, "zoe", "d" * 64)
    assert edit.set_disabled(doc, "yann", True) is True
    save(cfg, users, doc)
    text = users.read_text(encoding="utf-8")
    assert comments(text) == comments(COMMENTED)
    assert f'key_sha256 = "{"d" * 64}"  # rotated in March' in text  # the comment stays put
    data = tomllib.loads(text)["users"]
    assert data["zoe"]["key_sha256"] == "d" * 64
    assert data["yann"] == {"key_sha256": "c" * 64, "expires": date(2099, 1, 1), "disabled": True}


def test_add_then_remove_gives_back_the_same_text(cfg: Path, users: Path) -> None:
    users.write_text(COMMENTED, encoding="utf-8")
    add(cfg, users, "bob", BOB_SHA)
    assert users.read_text(encoding="utf-8") != COMMENTED
    removed = remove(cfg, users, "bob")
    assert removed == edit.Removed("bob", (), None, False)
    assert users.read_text(encoding="utf-8") == COMMENTED


def test_disable_then_enable_gives_back_the_same_text(cfg: Path, users: Path) -> None:
    users.write_text(COMMENTED, encoding="utf-8")
    doc = edit.open_users(users)
    assert edit.set_disabled(doc, "zoe", True) is True
    assert edit.set_disabled(doc, "zoe", True) is False  # already
    assert edit.set_disabled(doc, "zoe", False) is True
    assert edit.set_disabled(doc, "zoe", False) is False
    assert tomlkit.dumps(doc) == COMMENTED


def test_remove_says_what_it_removed(cfg: Path, users: Path) -> None:
    users.write_text(COMMENTED, encoding="utf-8")
    assert remove(cfg, users, "yann") == edit.Removed("yann", (), date(2099, 1, 1), False)
    assert remove(cfg, users, "zoe") == edit.Removed("zoe", ("research",), None, False)
    text = users.read_text(encoding="utf-8")
    assert tomllib.loads(text) == {}
    assert "# Our users (kept out of git)." in text


def test_inline_user_tables_are_edited_in_place(cfg: Path, users: Path) -> None:
    users.write_text(f'[users]\nzoe = {{ key_sha256 = "{"a" * 64}" }}  # inline\n', "utf-8")
    doc = edit.open_users(users)
    edit.set_disabled(doc, "zoe", True)
    edit.set_key(doc, "zoe", "e" * 64)
    save(cfg, users, doc)
    text = users.read_text(encoding="utf-8")
    assert "# inline" in text
    assert tomllib.loads(text)["users"]["zoe"] == {"key_sha256": "e" * 64, "disabled": True}


def test_add_existing_user_is_refused_and_the_document_unchanged(users: Path) -> None:
    users.write_text(COMMENTED, encoding="utf-8")
    doc = edit.open_users(users)
    with pytest.raises(edit.UserExistsError, match=r"users\.zoe exists"):
        edit.add_user(doc, "zoe", BOB_SHA, ["ops"])
    assert tomlkit.dumps(doc) == COMMENTED
    assert isinstance(edit.UserExistsError("x"), config.ConfigError)


@pytest.mark.parametrize(
    "change",
    [
        lambda doc: edit.remove_user(doc, "nobody"),
        lambda doc: edit.set_key(doc, "nobody", "a" * 64),
        lambda doc: edit.set_disabled(doc, "nobody", True),
    ],
)
def test_changing_a_missing_user_is_refused(users: Path, change: object) -> None:
    assert callable(change)
    for doc in (tomlkit.parse(COMMENTED), tomlkit.document()):  # the second: no [users] at all
        with pytest.raises(edit.NoSuchUserError, match="no user 'nobody'"):
            change(doc)


@pytest.mark.parametrize(
    ("doc_text", "expected"),
    [
        (f'[users.zoe]\nkey_sha256 = "{"a" * 64}"\ngroups = ["finance"]\n', "[groups.finance]"),
        ('[users.zoe]\nkey_sha256 = "short"\n', "users.zoe.key_sha256"),
        (f'[users.zoe]\nkey_sha256 = "{"a" * 64}"\n[groups.x]\n', "groups: unknown key"),
        (f'[users.Zoe]\nkey_sha256 = "{"a" * 64}"\n', "users.Zoe: got 'Zoe', expected a user"),
    ],
)
def test_save_refuses_an_invalid_users_file_and_keeps_the_old_one(
    cfg: Path, users: Path, doc_text: str, expected: str
) -> None:
    users.write_text(COMMENTED, encoding="utf-8")
    original = users.read_bytes()
    with pytest.raises(config.ConfigError) as caught:
        save(cfg, users, tomlkit.parse(doc_text))
    message = str(caught.value)
    assert message.startswith(f"not saved: {users}: ")
    assert expected in message
    assert users.read_bytes() == original
    assert sorted(p.name for p in users.parent.iterdir()) == [cfg.name, users.name]


def test_save_refuses_a_name_the_config_holds_too(cfg: Path, users: Path) -> None:
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text.replace("\n[users]\n", f'\n[users.zoe]\nkey_sha256 = "{"f" * 64}"\n'))
    with pytest.raises(config.ConfigError) as caught:
        save(cfg, users, tomlkit.parse(COMMENTED))
    assert str(caught.value) == (
        f"not saved: users.zoe is in both {cfg} and {users}; keep one (`lmk keys` manages {users})"
    )
    assert not users.exists()


@pytest.mark.parametrize("before", [0o644, 0o640, 0o600, 0o666])
def test_save_always_writes_mode_0600(cfg: Path, users: Path, before: int) -> None:
    users.write_text(COMMENTED, encoding="utf-8")
    users.chmod(before)
    add(cfg, users, "alice", ALICE_SHA)
    assert mode(users) == 0o600
    remove(cfg, users, "alice")
    assert mode(users) == 0o600


def test_save_replaces_the_file_in_one_rename(
    cfg: Path, users: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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

    users.write_text(COMMENTED, encoding="utf-8")
    monkeypatch.setattr(os, "replace", replace)
    add(cfg, users, "alice", ALICE_SHA)
    ((new, old),) = seen
    assert old == COMMENTED
    assert new == users.read_text(encoding="utf-8")
    assert ALICE_SHA in new
    assert sorted(p.name for p in users.parent.iterdir()) == [cfg.name, users.name]


def test_failed_write_leaves_the_file_and_no_temporary(
    cfg: Path, users: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    users.write_text(COMMENTED, encoding="utf-8")
    doc = edit.open_users(users)
    edit.add_user(doc, "alice", ALICE_SHA)

    def replace(src: str, dst: str, **dir_fds: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="No space"):
        save(cfg, users, doc)
    assert users.read_text(encoding="utf-8") == COMMENTED
    assert sorted(p.name for p in users.parent.iterdir()) == [cfg.name, users.name]


def test_save_replaces_a_planted_symlink_instead_of_writing_through_it(
    cfg: Path, users: Path
) -> None:
    victim = cfg.parent / "victim.txt"
    victim.write_text(COMMENTED, encoding="utf-8")
    users.symlink_to(victim)
    add(cfg, users, "alice", ALICE_SHA)
    assert not users.is_symlink()
    assert victim.read_text(encoding="utf-8") == COMMENTED  # untouched
    assert ALICE_SHA in users.read_text(encoding="utf-8")
    assert mode(users) == 0o600


def test_open_users_names_a_file_that_is_not_toml(users: Path) -> None:
    users.write_text("[users\n", encoding="utf-8")
    with pytest.raises(config.ConfigError, match="not valid TOML") as caught:
        edit.open_users(users)
    assert str(users) in str(caught.value)


def test_users_lock_is_exclusive(users: Path) -> None:
    with edit.users_lock(users):
        other = os.open(users.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
    other = os.open(users.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the block ended
    finally:
        os.close(other)
    assert not users.exists()  # and no lock file left behind
    assert sorted(p.name for p in users.parent.iterdir()) == ["lmk_config.toml"]


# The config itself (the functions other edits of the tracked file use)


def test_save_document_keeps_the_config_mode_and_refuses_an_invalid_one(cfg: Path) -> None:
    cfg.chmod(0o640)
    doc = edit.open_document(cfg)
    doc["proxy"]["listen_port"] = 9000
    edit.save_document(cfg, doc)
    assert mode(cfg) == 0o640
    assert config.read_config(cfg).proxy.listen_port == 9000
    before = cfg.read_bytes()
    doc["proxy"]["listen_port"] = "eighty"
    with pytest.raises(config.ConfigError) as caught:
        edit.save_document(cfg, doc)
    assert str(caught.value).startswith(f"not saved: {cfg}: invalid configuration")
    assert "proxy.listen_port" in str(caught.value)
    assert cfg.read_bytes() == before


def test_open_missing_config_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(config.ConfigError, match="no such file") as caught:
        edit.open_document(path)
    assert str(path) in str(caught.value)
