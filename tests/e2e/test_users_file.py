"""Users live in the users file (lmk_users.toml, 0600), beside the tracked config: a running
`lmk serve` follows `lmk keys new/disable/enable/rotate/revoke` without a restart, keeps its
users when the file turns invalid, and the tracked config never changes."""

from __future__ import annotations

import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_gateway
from tests.e2e.test_audit import client
from tests.harness import Gateway, run_lmk, wait_until
from tests.mock_upstream import MockUpstream

# The reload polls every second; a deadline well above it.
RELOAD = 10.0


@pytest.fixture(scope="module")
def users_gateway(
    tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream
) -> Iterator[Gateway]:
    """A gateway of its own (the test disables and revokes users), alice and bob made with
    `lmk keys new` before it starts."""
    gw = make_gateway(tmp_path_factory.mktemp("users-file"), mock)
    gw.start()
    yield gw
    gw.stop()


def status(gateway: Gateway, key: str) -> int:
    """The status of one request with this master key (a fresh connection each time)."""
    with client(gateway) as http:
        answer = http.get(
            "https://api.openai.com/v1/models", headers={"authorization": f"Bearer {key}"}
        )
    return answer.status_code


def lmk_keys(gateway: Gateway, *args: str) -> str:
    result = run_lmk(gateway.config, "keys", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_keys_take_effect_in_a_running_proxy_and_the_config_never_changes(
    users_gateway: Gateway,
) -> None:
    gw = users_gateway
    users = gw.workdir / "lmk_users.toml"
    tracked = gw.config.read_bytes()

    def files_are_right() -> None:
        assert gw.config.read_bytes() == tracked  # byte for byte
        assert stat.S_IMODE(users.stat().st_mode) == 0o600

    files_are_right()
    assert set(tomllib.loads(users.read_text(encoding="utf-8"))["users"]) == {"alice", "bob"}
    assert b"key_sha256" not in tracked
    assert status(gw, gw.keys["alice"]) == 200

    # new: accepted within a reload, without a restart.
    carol = gw.new_user("carol", "research")
    wait_until(lambda: status(gw, carol) == 200, "carol's new key to be accepted", RELOAD)
    files_are_right()

    # disable: refused; enable: accepted again.
    lmk_keys(gw, "disable", "carol")
    wait_until(lambda: status(gw, carol) == 401, "carol's disabled key to be refused", RELOAD)
    files_are_right()
    lmk_keys(gw, "enable", "carol")
    wait_until(lambda: status(gw, carol) == 200, "carol's key to be accepted again", RELOAD)
    files_are_right()

    # rotate: the reload that lets the new key in refuses the old one.
    rotated = lmk_keys(gw, "rotate", "carol").strip()
    assert rotated != carol
    wait_until(lambda: status(gw, rotated) == 200, "carol's rotated key to be accepted", RELOAD)
    assert status(gw, carol) == 401
    files_are_right()

    # list: the table, computed from the users file.
    rows = [line.split() for line in lmk_keys(gw, "list").splitlines()]
    assert rows == [
        ["NAME", "GROUPS", "STATUS", "EXPIRES"],
        ["alice", "research", "active", "-"],
        ["bob", "ops", "active", "-"],
        ["carol", "research", "active", "-"],
    ]

    # revoke: refused, and the user is gone.
    said = lmk_keys(gw, "revoke", "carol")
    assert said.startswith("revoked carol (groups: research; expires: never): ")
    wait_until(lambda: status(gw, rotated) == 401, "carol's revoked key to be refused", RELOAD)
    assert "carol" not in tomllib.loads(users.read_text(encoding="utf-8"))["users"]
    assert status(gw, gw.keys["alice"]) == 200
    files_are_right()

    log = gw.log.read_text(errors="replace")
    for key in (carol, rotated):
        assert key not in log


def test_an_invalid_users_file_is_refused_and_the_running_users_stay(
    users_gateway: Gateway,
) -> None:
    gw = users_gateway
    users = gw.workdir / "lmk_users.toml"
    good = users.read_text(encoding="utf-8")
    tracked = gw.config.read_bytes()
    errors_before = gw.log.read_text(errors="replace").count("Configuration not reloaded")
    try:
        users.write_text(good + '\n[users.zed]\nkey_sha256 = "not-a-hash"\n', encoding="utf-8")

        def refused() -> bool:
            log = gw.log.read_text(errors="replace")
            return log.count("Configuration not reloaded") > errors_before

        wait_until(refused, "the invalid users file to be refused in the log", RELOAD)
        log = gw.log.read_text(errors="replace")
        assert "users.zed.key_sha256" in log and str(users) in log
        assert status(gw, gw.keys["alice"]) == 200  # the running users stay
    finally:
        users.write_text(good, encoding="utf-8")
    dave = gw.new_user("dave", "ops")  # a valid file again: edits work and are taken
    wait_until(lambda: status(gw, dave) == 200, "dave to be accepted", RELOAD)
    assert gw.config.read_bytes() == tracked


def test_a_user_name_is_checked_before_anything_is_written(users_gateway: Gateway) -> None:
    gw = users_gateway
    before = (gw.workdir / "lmk_users.toml").read_bytes()
    result = run_lmk(gw.config, "keys", "new", "bad name!")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("lmk: 'bad name!' is not a user name")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert (gw.workdir / "lmk_users.toml").read_bytes() == before


def test_the_users_file_is_beside_the_config(users_gateway: Gateway) -> None:
    result = run_lmk(users_gateway.config, "check")
    assert f"users file {Path(users_gateway.workdir / 'lmk_users.toml').resolve()}" in (
        result.stdout
    )
