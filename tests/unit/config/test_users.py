"""The users file (`proxy.users_file`, default lmk_users.toml beside the config): validated like
the config, merged with the config's own [users] (a name in both is an error), its groups
defined in the config."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from llamakey import config
from tests.unit.builders import ALICE_KEY, BOB_KEY, sha
from tests.unit.config.helpers import SHIPPED

CONFIG = '[proxy]\ncerts_dir = "certs"\n\n[groups.research]\n[groups.ops]\n'


def user(name: str, key: str, extra: str = "") -> str:
    return f'[users.{name}]\nkey_sha256 = "{sha(key)}"\n{extra}\n'


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "lmk_config.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


@pytest.fixture
def users(cfg: Path) -> Path:
    return cfg.parent / "lmk_users.toml"


def load_error(cfg: Path) -> str:
    with pytest.raises(config.ConfigError) as caught:
        config.load(cfg)
    return str(caught.value)


def test_no_users_file_means_no_users(cfg: Path, users: Path) -> None:
    settings = config.load(cfg)
    assert settings.users_path == users.resolve()
    assert settings.users_by_hash == {}
    assert settings.users_file == config.UsersFile()


def test_users_of_both_files_are_found_by_their_key(cfg: Path, users: Path) -> None:
    users.write_text(
        user("alice", ALICE_KEY, 'groups = ["research"]\nexpires = 2099-01-01T00:00:00Z'),
        encoding="utf-8",
    )
    cfg.write_text(CONFIG + user("bob", BOB_KEY, "disabled = true"), encoding="utf-8")
    settings = config.load(cfg)
    alice, bob = settings.users_by_hash[sha(ALICE_KEY)], settings.users_by_hash[sha(BOB_KEY)]
    assert (alice.name, alice.groups, alice.expires) == (
        "alice",
        ("research",),
        datetime(2099, 1, 1, tzinfo=UTC),
    )
    assert (bob.name, bob.disabled) == ("bob", True)
    assert set(settings.users_file.users) == {"alice"}
    assert set(settings.file.users) == {"bob"}


def test_a_name_in_both_files_is_refused_naming_both(cfg: Path, users: Path) -> None:
    users.write_text(user("alice", ALICE_KEY), encoding="utf-8")
    cfg.write_text(CONFIG + user("alice", BOB_KEY), encoding="utf-8")
    message = load_error(cfg)
    assert message == (
        f"users.alice is in both {cfg.resolve()} and {users}; keep one (`lmk keys` manages {users})"
    )


def test_one_key_for_two_users_of_two_files_is_refused(cfg: Path, users: Path) -> None:
    users.write_text(user("alice", ALICE_KEY), encoding="utf-8")
    cfg.write_text(CONFIG + user("eve", ALICE_KEY), encoding="utf-8")
    message = load_error(cfg)
    assert message.startswith(f"{users}: users.alice.key_sha256: same key as users.eve of ")
    assert str(cfg.resolve()) in message


def test_a_group_the_config_does_not_define_is_refused_naming_both(cfg: Path, users: Path) -> None:
    users.write_text(user("alice", ALICE_KEY, 'groups = ["research", "finance"]'), "utf-8")
    message = load_error(cfg)
    assert message == (
        f"{users}: users.alice.groups: got 'finance', expected a [groups.finance] table in "
        f"{cfg.resolve()}"
    )


@pytest.mark.parametrize(
    ("text", "path", "expected"),
    [
        (user("alice", ALICE_KEY, "colour = 1"), "users.alice.colour", "unknown key"),
        ('[users.alice]\nkey_sha256 = "nothex"\n', "users.alice.key_sha256", "'nothex'"),
        ("[users.alice]\ngroups = []\n", "users.alice", "expected key_sha256 (a master key"),
        (user("alice", ALICE_KEY, 'disabled = "maybe"'), "users.alice.disabled", "bool"),
        (user("alice", ALICE_KEY, 'expires = "soon"'), "users.alice.expires", "'soon'"),
        (user("alice", ALICE_KEY, 'groups = "research"'), "users.alice.groups", "list"),
        (user("bad name!", ALICE_KEY).replace("bad name!", '"bad name!"'), "users.bad name!", ""),
        ("[groups.research]\n", "groups", "[groups] is in lmk_config.toml"),
        ("[proxy]\nlisten_port = 1\n", "proxy", "only [users.NAME] tables belong here"),
        ("users = 3\n", "users", "dictionary"),
    ],
)
def test_users_file_errors_name_the_file_and_toml_path(
    cfg: Path, users: Path, text: str, path: str, expected: str
) -> None:
    users.write_text(text, encoding="utf-8")
    message = load_error(cfg)
    first, *lines = message.splitlines()
    assert first == f"{users}: invalid users file"
    (line,) = [line for line in lines if line.strip().startswith(path + ":")]
    assert expected in line


def test_a_bad_user_name_is_refused_in_either_file(cfg: Path, users: Path) -> None:
    users.write_text(user('"Alice"', ALICE_KEY), encoding="utf-8")
    message = load_error(cfg)
    assert "users.Alice: got 'Alice', expected a user name (a lowercase letter" in message
    users.unlink()
    cfg.write_text(CONFIG + user('"Bob"', BOB_KEY), encoding="utf-8")
    message = load_error(cfg)
    assert message.startswith(f"{cfg}: invalid configuration")
    assert "users.Bob: got 'Bob', expected a user name" in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"[users\n", "not valid TOML"), (b"\xff\xfe[users]\n", "not UTF-8")],
)
def test_an_unreadable_users_file_is_named(
    cfg: Path, users: Path, content: bytes, expected: str
) -> None:
    users.write_bytes(content)
    message = load_error(cfg)
    assert message.startswith(f"{users}: {expected}")


def test_a_directory_as_users_file_is_named(cfg: Path, users: Path) -> None:
    users.mkdir()
    assert load_error(cfg).startswith(f"{users}: cannot read")


def test_users_file_setting_is_relative_to_the_config(cfg: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "private" / "team.toml"
    elsewhere.parent.mkdir()
    elsewhere.write_text(user("alice", ALICE_KEY), encoding="utf-8")
    cfg.write_text(CONFIG.replace("[proxy]\n", '[proxy]\nusers_file = "private/team.toml"\n'))
    settings = config.load(cfg)
    assert settings.users_path == elsewhere.resolve()
    assert settings.users_by_hash[sha(ALICE_KEY)].name == "alice"
    # An absolute path is taken as it is.
    cfg.write_text(CONFIG.replace("[proxy]\n", f'[proxy]\nusers_file = "{elsewhere}"\n'))
    assert config.load(cfg).users_path == elsewhere


def test_an_empty_users_file_setting_is_refused(cfg: Path) -> None:
    cfg.write_text(CONFIG.replace("[proxy]\n", '[proxy]\nusers_file = ""\n'))
    assert "proxy.users_file" in load_error(cfg)


def test_the_shipped_config_names_the_default_users_file() -> None:
    shipped = config.read_config(SHIPPED)
    assert shipped.proxy.users_file == config.DEFAULT_USERS_NAME == "lmk_users.toml"
    assert shipped.users == {}
    ignored = (SHIPPED.parent / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert config.DEFAULT_USERS_NAME in ignored


def test_the_readme_documents_the_users_file() -> None:
    readme = (SHIPPED.parent / "README.md").read_text(encoding="utf-8")
    assert '| `proxy.users_file` | `"lmk_users.toml"` |' in readme
    for key in config.UserTable.model_fields:
        assert f"| `users.NAME.{key}` |" in readme, key
    for command in ("new", "rotate", "disable", "enable", "revoke", "list"):
        assert f"`lmk keys {command}" in readme, command
