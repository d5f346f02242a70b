"""`lmk`: run the gateway and manage its keys, CA and client set-up."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llamakey import config
from llamakey.cli import audit, browse, ca, check, env, keys, serve, usage
from llamakey.cli.common import ENV_FILE
from llamakey.cli.env import client_environment

__all__ = ["ENV_FILE", "build_parser", "client_environment", "main"]

# One module per command group, each adding its sub-parsers (in `lmk --help` order).
COMMANDS = (serve, check, keys, ca, env, usage, audit, browse)  # browse: `lmk audit browse`


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmk", description=__doc__)
    parser.add_argument(
        "--config",
        type=Path,
        default=config.default_path(),
        help="configuration file (default: $LMK_CONFIG or ./lmk_config.toml)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
