"""`lmk`'s parser, assembled from one module per command group; `lmk serve` and `lmk web`."""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Sequence
from pathlib import Path

import pytest

from llamakey import cli, config
from llamakey.cli import build_parser, main, serve
from tests.unit.cli.helpers import lmk
from tests.unit.config.helpers import SHIPPED

# Every command line that reaches a command, and the module that runs it.
LEAVES = {
    ("serve",): "serve",
    ("web",): "serve",
    ("check",): "check",
    ("keys", "new", "alice"): "keys",
    ("keys", "list"): "keys",
    ("keys", "revoke", "alice"): "keys",
    ("ca", "init"): "ca",
    ("env", "alice"): "env",
    ("usage",): "usage",
    ("status",): "status",
    ("status", "alice"): "status",
    ("audit", "verify"): "audit",
}


def subcommands(parser: argparse.ArgumentParser) -> list[str]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(action.choices)


def test_console_script_is_cli_main() -> None:
    project = tomllib.loads((SHIPPED.parent / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["scripts"] == {"lmk": "llamakey.cli:main"}
    assert cli.main is main


def test_commands_in_help_order() -> None:
    parser = build_parser()
    assert subcommands(parser) == [
        "serve",
        "web",
        "sidecar",
        "check",
        "keys",
        "ca",
        "env",
        "usage",
        "status",
        "audit",
    ]
    help_text = parser.format_help()
    assert "run the gateway and manage its keys" in help_text  # the package's docstring
    assert "--config CONFIG" in help_text


@pytest.mark.parametrize("argv", list(LEAVES), ids=" ".join)
def test_every_command_is_run_by_its_module(argv: tuple[str, ...]) -> None:
    args = build_parser().parse_args(list(argv))
    assert args.func.__module__ == f"llamakey.cli.{LEAVES[argv]}"
    assert args.func.__name__.startswith("cmd_")


@pytest.mark.parametrize("argv", [[], ["keys"], ["ca"], ["audit"], ["nope"]])
def test_a_missing_or_unknown_command_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert "usage: lmk" in capsys.readouterr().err


def test_config_defaults_to_lmk_config_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMK_CONFIG", "/etc/lmk/gateway.toml")
    assert build_parser().parse_args(["check"]).config == Path("/etc/lmk/gateway.toml")
    monkeypatch.delenv("LMK_CONFIG")
    assert build_parser().parse_args(["check"]).config == Path(config.DEFAULT_CONFIG_NAME)


def test_the_client_environment_is_still_reachable_from_cli() -> None:
    from llamakey import clientenv

    assert cli.client_environment is clientenv.client_environment
    assert cli.ENV_FILE == "llamakey_local.env"


@pytest.mark.parametrize(
    ("argv", "sets", "web"),
    [
        (["serve"], [], False),
        (["web"], [], True),
        (["serve", "--set", "a=1", "--set", "b=2"], ["a=1", "b=2"], False),
        (["web", "-w", "flows.mitm", "--set", "a=1"], ["a=1", "save_stream_file=flows.mitm"], True),
        (["serve", "--save", "out"], ["save_stream_file=out"], False),
        (["serve", "--quiet"], ["lmk_quiet=true"], False),
        (["web", "-q", "--set", "a=1"], ["a=1", "lmk_quiet=true"], True),
    ],
)
def test_serve_and_web_pass_options_to_the_server(
    cfg: Path,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    sets: list[str],
    web: bool,
) -> None:
    from llamakey import server

    calls: list[tuple[Path, list[str], bool]] = []

    async def run(config_path: Path, options: Sequence[str], *, web: bool = False) -> int:
        calls.append((config_path, list(options), web))
        return 7

    monkeypatch.setattr(server, "run", run)
    monkeypatch.setattr(serve, "_check_ports", lambda *args, **kwargs: None)  # 8080 may be busy
    assert lmk(cfg, *argv) == 7
    assert calls == [(cfg, sets, web)]


def test_serve_on_a_missing_config_exits_1_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A failure, as `lmk check` on the same file: status 2 is for mistakes on the command line.
    missing = tmp_path / "missing.toml"
    assert lmk(missing, "serve") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"lmk: {missing}: no such file")
