"""`lmk keys new/rotate/disable/enable/revoke/list`, in-process against a copy of the shipped
lmk_config.toml: users go to the users file (lmk_users.toml beside it, mode 0600), never into
the tracked config."""

from __future__ import annotations

import re
import stat
import tomllib
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from llamakey import config
from llamakey.config import edit
from tests.unit.cli.helpers import lmk, lmk_fails, new_key, sha256
from tests.unit.config.helpers import comments, is_subsequence

NEXT_YEAR = (datetime.now(UTC).date() + timedelta(days=366)).isoformat()


@pytest.fixture
def users(cfg: Path) -> Path:
    """Where the users file of `cfg` goes (the shipped default: beside it)."""
    return cfg.parent / config.DEFAULT_USERS_NAME


@pytest.fixture
def unchanged_config(cfg: Path) -> Iterator[None]:
    """The tracked config is byte for byte the same after the test."""
    before = cfg.read_bytes()
    yield
    assert cfg.read_bytes() == before


def data(users: Path) -> dict[str, Any]:
    return tomllib.loads(users.read_text(encoding="utf-8"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def usage_fails(cfg: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run a command that must be refused as a usage error: status 2, one line on stderr."""
    with pytest.raises(SystemExit) as caught:
        lmk(cfg, *args)
    assert caught.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("lmk: ") and err.count("\n") == 1, err
    return err.strip()


# lmk keys new


@pytest.mark.usefixtures("unchanged_config")
def test_keys_new_prints_key_once_and_stores_only_its_hash_in_the_users_file(
    cfg: Path, users: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not users.exists()
    assert lmk(cfg, "keys", "new", "alice", "--group", "research") == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert re.fullmatch(r"lmk_[A-Za-z0-9_-]{43}", key)
    assert out == key + "\n"  # the key alone on stdout: `KEY=$(lmk keys new alice)` works
    assert key not in err
    assert "lmk env alice" in err
    assert str(users.resolve()) in err

    text = users.read_text(encoding="utf-8")
    assert mode(users) == 0o600
    assert key not in text and key[4:] not in text
    assert data(users) == {"users": {"alice": {"key_sha256": sha256(key), "groups": ["research"]}}}
    assert comments(text) == comments(edit.USERS_HEADER)  # a new file starts with its header

    # The proxy accepts the two files, and the key is alice's.
    settings = config.load(cfg)
    assert settings.users_path == users.resolve()
    user = settings.users_by_hash[sha256(key)]
    assert (user.name, user.groups, user.disabled, user.expires) == (
        "alice",
        ("research",),
        False,
        None,
    )


@pytest.mark.usefixtures("unchanged_config")
def test_keys_new_with_an_expiry_and_several_groups(
    cfg: Path, users: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--group", "ops", "--group", "research", "--group", "ops", "--expires", NEXT_YEAR]
    assert lmk(cfg, "keys", "new", "bob", *args) == 0
    key = capsys.readouterr().out.strip()
    assert data(users)["users"]["bob"] == {
        "key_sha256": sha256(key),
        "groups": ["ops", "research"],  # each once, in the order given
        "expires": date.fromisoformat(NEXT_YEAR),  # a TOML date, not a string
    }
    user = config.load(cfg).users_by_hash[sha256(key)]
    assert user.expires == datetime.fromisoformat(NEXT_YEAR).replace(tzinfo=UTC)
    assert user.refusal(datetime.now(UTC)) is None


def test_keys_new_each_user_gets_a_distinct_key(
    cfg: Path, users: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = new_key(cfg, capsys, "alice", "research")
    bob = new_key(cfg, capsys, "bob", "ops", "research")
    carol = new_key(cfg, capsys, "carol")
    assert len({alice, bob, carol}) == 3
    assert "groups" not in data(users)["users"]["carol"]  # no groups key for no groups
    assert len(config.load(cfg).users_by_hash) == 3


def test_keys_new_twice_fails_and_keeps_the_file(
    cfg: Path, users: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new_key(cfg, capsys, "alice", "research")
    before = users.read_bytes()
    message = lmk_fails(cfg, "keys", "new", "alice")
    assert message.startswith("lmk: users.alice exists in ")
    assert "lmk keys rotate alice" in message and "lmk keys revoke alice" in message
    assert users.read_bytes() == before
    assert capsys.readouterr().out == ""  # no second key printed


@pytest.mark.parametrize("name", ["bad name!", "Alice", "1alice", "-x", "a" * 65, "al/ice", ""])
@pytest.mark.usefixtures("unchanged_config")
def test_keys_refuse_a_bad_name_in_one_line(
    cfg: Path, users: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    for command in ("new", "rotate", "disable", "enable", "revoke"):
        message = usage_fails(cfg, capsys, "keys", command, "--", name)
        assert message == (
            f"lmk: {name!r} is not a user name: expected a lowercase letter, then up to 63 of "
            "a-z 0-9 _ . -"
        )
    assert not users.exists()


@pytest.mark.parametrize("name", ["a", "alice", "a.b-c_d", "x" + "9" * 63])
def test_keys_accept_good_names(cfg: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    key = new_key(cfg, capsys, name)
    assert config.load(cfg).users_by_hash[sha256(key)].name == name
    assert lmk(cfg, "keys", "revoke", name) == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2027-13-01", "expected a date, YYYY-MM-DD"),
        ("next year", "expected a date, YYYY-MM-DD"),
        ("20270101", "expected a date, YYYY-MM-DD"),
        ("2020-01-01", "expected a date after today"),
        (datetime.now(UTC).date().isoformat(), "expected a date after today"),
    ],
)
@pytest.mark.usefixtures("unchanged_config")
def test_keys_new_refuses_a_bad_expiry_in_one_line(
    cfg: Path, users: Path, capsys: pytest.CaptureFixture[str], value: str, expected: str
) -> None:
    message = usage_fails(cfg, capsys, "keys", "new", "alice", "--expires", value)
    assert message.startswith(f"lmk: --expires {value}") or f"{value!r}" in message
    assert expected in message
    assert not users.exists()


@pytest.mark.usefixtures("unchanged_config")
def test_keys_new_refuses_a_group_the_config_does_not_define(
    cfg: Path, users: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    message = lmk_fails(cfg, "keys", "new", "alice", "--group", "research", "--group", "finance")
    assert message == (
        f"lmk: users.alice.groups: no group 'finance'; add a [groups.finance] table to "
        f"{cfg.resolve()} first"
    )
    assert not users.exists()
    assert capsys.readouterr().out == ""  # no key handed out for a user that was not saved


# lmk keys rotate / disable / enable / revoke


@pytest.mark.usefixtures("unchanged_config")
def test_keys_rotate_replaces_the_key_and_keeps_the_rest(
    cfg: Path, users: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lmk(cfg, "keys", "new", "alice", "--group", "research", "--expires", NEXT_YEAR) == 0
    old = capsys.readouterr().out.strip()
    new_key(cfg, capsys, "bob")
    before = data(users)

    assert lmk(cfg, "keys", "rotate", "alice") == 0
    out, err = capsys.readouterr()
    new = out.strip()
    assert re.fullmatch(r"lmk_[A-Za-z0-9_-]{43}", new) and new != old
    assert "lmk env alice" in err and "old key is refused" in err
    assert new not in err

    after = data(users)
    assert after["users"]["alice"] == {**before["users"]["alice"], "key_sha256": sha256(new)}
    assert after["users"]["bob"] == before["users"]["bob"]
    assert sha256(old) not in users.read_text(encoding="utf-8")
    assert mode(users) == 0o600
    keys = config.load(cfg).users_by_hash
    assert sha256(old) not in keys
    assert keys[sha256(new)].name == "alice"


def test_keys_rotate_a_disabled_user_says_the_new_key_is_refused_too(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new_key(cfg, capsys, "alice")
    assert lmk(cfg, "keys", "disable", "alice") == 0
    capsys.readouterr()
    assert lmk(cfg, "keys", "rotate", "alice") == 0
    assert "alice is disabled: the new key is refused too" in capsys.readouterr().err


@pytest.mark.usefixtures("unchanged_config")
def test_keys_disable_then_enable(
    cfg: Path, users: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = new_key(cfg, capsys, "alice", "research")
    original = users.read_text(encoding="utf-8")

    assert lmk(cfg, "keys", "disable", "alice") == 0
    assert capsys.readouterr().out.startswith("disabled alice: a running proxy refuses the key")
    assert data(users)["users"]["alice"]["disabled"] is True
    assert config.load(cfg).users_by_hash[sha256(key)].refusal(datetime.now(UTC)) == "disabled"
    assert mode(users) == 0o600

    # Again: nothing to do, and the file is not even rewritten.
    inode = users.stat().st_ino
    assert lmk(cfg, "keys", "disable", "alice") == 0
    assert capsys.readouterr().out == "alice was already disabled\n"
    assert users.stat().st_ino == inode

    assert lmk(cfg, "keys", "enable", "alice") == 0
    assert capsys.readouterr().out.startswith("enabled alice")
    assert users.read_text(encoding="utf-8") == original  # the `disabled` line is gone again
    assert config.load(cfg).users_by_hash[sha256(key)].refusal(datetime.now(UTC)) is None
    assert lmk(cfg, "keys", "enable", "alice") == 0
    assert capsys.readouterr().out == "alice was already enabled\n"


def test_keys_enable_an_expired_user_warns_that_the_key_stays_refused(
    cfg: Path, users: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users.write_text(
        f'[users.alice]\nkey_sha256 = "{"a" * 64}"\ndisabled = true\nexpires = 2020-01-01\n',
        encoding="utf-8",
    )
    assert lmk(cfg, "keys", "enable", "alice") == 0
    out, err = capsys.readouterr()
    assert out.startswith("enabled alice")
    assert "alice expired on 2020-01-01, so the key stays refused" in err


@pytest.mark.usefixtures("unchanged_config")
def test_keys_revoke_removes_the_user_and_says_what_it_removed(
    cfg: Path, users: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lmk(cfg, "keys", "new", "alice", "--group", "research", "--group", "ops") == 0
    after_alice = users.read_text(encoding="utf-8")
    assert lmk(cfg, "keys", "new", "bob", "--expires", NEXT_YEAR) == 0
    alice, bob = capsys.readouterr().out.split()

    assert lmk(cfg, "keys", "revoke", "bob") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"revoked bob (groups: none; expires: {NEXT_YEAR}): ")
    assert "next request" in out
    assert users.read_text(encoding="utf-8") == after_alice  # as if bob had never been added

    assert lmk(cfg, "keys", "disable", "alice") == 0
    capsys.readouterr()
    assert lmk(cfg, "keys", "revoke", "alice") == 0
    out = capsys.readouterr().out
    assert out.startswith("revoked alice (groups: research, ops; expires: never, was disabled): ")
    assert data(users) == {}  # the header stays, the users are gone
    assert comments(users.read_text(encoding="utf-8")) == comments(edit.USERS_HEADER)
    assert mode(users) == 0o600
    keys = config.load(cfg).users_by_hash
    assert sha256(alice) not in keys and sha256(bob) not in keys


@pytest.mark.parametrize("command", ["rotate", "disable", "enable", "revoke"])
def test_keys_commands_on_a_missing_user_fail_in_one_line(
    cfg: Path, users: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    new_key(cfg, capsys, "alice")
    before = users.read_bytes()
    message = lmk_fails(cfg, "keys", command, "zed")
    assert message == f"lmk: no user 'zed' in {users.resolve()} (`lmk keys list` lists them)"
    assert users.read_bytes() == before
    assert capsys.readouterr().out == ""


# The users file: comments, layout and mode kept; validated before it is saved


HAND_WRITTEN = """\
# Our team's users. Maintained with `lmk keys`; see the wiki.

[users.zoe]  # the first one
key_sha256 = "{zoe}"   # rotated 2025-01
groups = ["research"]

# Contractors below.
[users.yann]
key_sha256 = "{yann}"
expires = {next_year}  # end of contract
"""


@pytest.mark.usefixtures("unchanged_config")
def test_every_command_keeps_the_users_file_comments_and_layout(
    cfg: Path, users: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = HAND_WRITTEN.format(zoe="a" * 64, yann="b" * 64, next_year=NEXT_YEAR)
    users.write_text(original, encoding="utf-8")
    users.chmod(0o644)

    new_key(cfg, capsys, "alice", "ops")
    assert mode(users) == 0o600  # whatever it was before
    for args in (["rotate", "zoe"], ["disable", "yann"], ["enable", "yann"], ["rotate", "alice"]):
        assert lmk(cfg, "keys", *args) == 0
        capsys.readouterr()
        text = users.read_text(encoding="utf-8")
        assert comments(text) == comments(original), args
        assert mode(users) == 0o600
    unchanged = [line for line in original.splitlines() if "key_sha256" not in line]
    assert is_subsequence(unchanged, text.splitlines())
    assert lmk(cfg, "keys", "revoke", "alice") == 0
    text = users.read_text(encoding="utf-8")
    assert comments(text) == comments(original)
    assert set(data(users)["users"]) == {"zoe", "yann"}


@pytest.mark.usefixtures("unchanged_config")
def test_keys_do_not_save_into_an_invalid_users_file(
    cfg: Path, users: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users.write_text(f'[users.zoe]\nkey_sha256 = "{"a" * 64}"\ncolour = "blue"\n', "utf-8")
    before = users.read_bytes()
    for args in (["new", "alice"], ["rotate", "zoe"], ["disable", "zoe"], ["list"]):
        message = lmk_fails(cfg, "keys", *args)
        assert message.startswith(f"lmk: {users}: invalid users file"), message
        assert "users.zoe.colour: got 'blue', unknown key" in message
    assert users.read_bytes() == before
    assert capsys.readouterr().out == ""  # no key handed out for a user that was not saved


def test_keys_new_does_not_save_with_an_invalid_config(
    cfg: Path, users: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text.replace("listen_port = 8080", 'listen_port = "x"'), encoding="utf-8")
    message = lmk_fails(cfg, "keys", "new", "alice")
    assert message.startswith(f"lmk: {cfg}: invalid configuration")
    assert "proxy.listen_port" in message
    assert not users.exists()
    assert capsys.readouterr().out == ""


def test_keys_on_a_missing_config(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    for args in (["new", "alice"], ["revoke", "alice"], ["list"]):
        assert lmk_fails(missing, "keys", *args).startswith(f"lmk: {missing}: no such file")
    assert list(tmp_path.iterdir()) == []


def test_users_file_setting_is_relative_to_the_config(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (cfg.parent / "private").mkdir()
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(
        text.replace('users_file = "lmk_users.toml"', 'users_file = "private/team.toml"'), "utf-8"
    )
    key = new_key(cfg, capsys, "alice")
    users = cfg.parent / "private" / "team.toml"
    assert data(users)["users"]["alice"]["key_sha256"] == sha256(key)
    assert not (cfg.parent / config.DEFAULT_USERS_NAME).exists()
    assert mode(users) == 0o600


def test_keys_new_into_a_missing_directory_fails_in_one_line(cfg: Path) -> None:
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(
        text.replace('users_file = "lmk_users.toml"', 'users_file = "nodir/users.toml"'), "utf-8"
    )
    message = lmk_fails(cfg, "keys", "new", "alice")
    assert message.startswith("lmk: ") and "nodir/users.toml: cannot write" in message
    assert "\n" not in message


# Users the tracked config still holds ([users], for compatibility)


def legacy(cfg: Path, name: str, digest: str) -> None:
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(
        text.replace("\n[users]\n", f'\n[users.{name}]\nkey_sha256 = "{digest}"\n', 1), "utf-8"
    )


def test_users_in_the_tracked_config_are_listed_but_not_edited(
    cfg: Path, users: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy(cfg, "olga", "c" * 64)
    new_key(cfg, capsys, "alice")
    before = cfg.read_bytes()

    assert lmk(cfg, "keys", "list") == 0
    out, err = capsys.readouterr()
    assert [line.split()[0] for line in out.splitlines()] == ["NAME", "alice", "olga"]
    assert f"in {cfg.resolve()} (not edited by `lmk keys`): olga" in err

    for command in ("rotate", "disable", "enable", "revoke"):
        message = lmk_fails(cfg, "keys", command, "olga")
        assert message == (
            f"lmk: users.olga is in {cfg.resolve()}, which `lmk keys` does not edit: move its "
            f"[users.olga] table to {users.resolve()}, or edit it there"
        )
    assert lmk_fails(cfg, "keys", "new", "olga") == f"lmk: users.olga exists in {cfg.resolve()}"
    assert cfg.read_bytes() == before
    assert "olga" not in data(users)["users"]


# lmk keys list


def test_keys_list_is_a_table_of_name_groups_status_expiry(
    cfg: Path, users: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = new_key(cfg, capsys, "alice", "research", "ops")
    assert lmk(cfg, "keys", "new", "bob", "--expires", NEXT_YEAR) == 0
    capsys.readouterr()
    new_key(cfg, capsys, "carol")
    assert lmk(cfg, "keys", "disable", "carol") == 0
    # An expiry that has passed (only a hand edit can write one).
    text = users.read_text(encoding="utf-8")
    users.write_text(
        text + f'\n[users.dora]\nkey_sha256 = "{"d" * 64}"\nexpires = 2020-01-01T12:30:00Z\n',
        encoding="utf-8",
    )
    capsys.readouterr()

    assert lmk(cfg, "keys", "list") == 0
    out, err = capsys.readouterr()
    assert err == ""
    rows = [line.split() for line in out.splitlines()]
    assert rows == [
        ["NAME", "GROUPS", "STATUS", "EXPIRES"],
        ["alice", "research,ops", "active", "-"],
        ["bob", "-", "active", NEXT_YEAR],
        ["carol", "-", "disabled", "-"],
        ["dora", "-", "expired", "2020-01-01T12:30:00+0000"],
    ]
    header = out.splitlines()[0]
    for line in out.splitlines()[1:]:  # columns line up
        assert line.index(line.split()[2]) == header.index("STATUS")
    assert alice not in out and sha256(alice) not in out


def test_keys_list_with_no_users_prints_the_header(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lmk(cfg, "keys", "list") == 0
    assert capsys.readouterr().out == "NAME  GROUPS  STATUS  EXPIRES\n"


def test_keys_list_says_expired_from_today(
    cfg: Path, users: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    users.write_text(
        f'[users.old]\nkey_sha256 = "{"e" * 64}"\nexpires = {yesterday}\n'
        f'[users.new]\nkey_sha256 = "{"f" * 64}"\nexpires = {tomorrow}\n',
        encoding="utf-8",
    )
    assert lmk(cfg, "keys", "list") == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert rows == [["new", "-", "active", tomorrow], ["old", "-", "expired", yesterday]]


def test_keys_new_with_a_jwt_subject_makes_a_user_with_no_master_key(
    cfg: Path, users: Path, capsys: pytest.CaptureFixture[str], unchanged_config: None
) -> None:
    subject = "5f0c9e7a-1111-2222-3333-444455556666"
    assert lmk(cfg, "keys", "new", "carol", "--group", "research", "--jwt-subject", subject) == 0
    out, err = capsys.readouterr()
    assert out == "" and "JWT identity" in err and "lmk keys rotate carol" in err
    assert data(users)["users"]["carol"] == {"jwt_subject": subject, "groups": ["research"]}
    carol = config.load(cfg).users["carol"]
    assert (carol.key_sha256, carol.jwt_subject) == (None, subject)
    assert lmk(cfg, "keys", "list") == 0
    assert re.search(r"^carol +research +active", capsys.readouterr().out, re.MULTILINE)
    assert lmk(cfg, "keys", "rotate", "carol") == 0  # she gets a master key beside it
    key = capsys.readouterr().out.strip()
    assert config.load(cfg).users_by_hash[sha256(key)].jwt_subject == subject
    assert "--jwt-subject" in usage_fails(cfg, capsys, "keys", "new", "dave", "--jwt-subject", " ")
