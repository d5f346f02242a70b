"""`lmk`: run the gateway and manage its keys, CA and client set-up."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from llamakey import ca as ca_files
from llamakey import config
from llamakey.cli import audit, browse, ca, check, env, keys, serve, sidecar, status, usage
from llamakey.cli.common import ENV_FILE, one_line
from llamakey.clientenv import client_environment

__all__ = ["ENV_FILE", "build_parser", "client_environment", "main"]

# One module per command group, each adding its sub-parsers (in `lmk --help` order);
# browse adds `lmk audit browse`.
COMMANDS = (serve, sidecar, check, keys, ca, env, usage, status, audit, browse)


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
    """Run one command. A mistake ends in one line ``lmk: …`` saying what to do, never a
    traceback: status 2 for a usage error (as argparse's own), 1 for anything else."""
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except SystemExit as leaving:
        if isinstance(leaving.code, str) and "\n" in leaving.code.strip():
            raise SystemExit(one_line(leaving.code)) from None
        raise
    except BrokenPipeError:
        # A reader that stops early (`lmk usage | head -1`) is not an error, and the
        # interpreter's own flush at exit must not complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0
    except KeyboardInterrupt:
        print(file=sys.stderr)
        raise SystemExit(130) from None
    except (OSError, ca_files.CAError) as error:
        # A file that cannot be read or written, a broken CA: what went wrong, on one line.
        raise SystemExit(f"lmk: {one_line(_describe(error))}") from None
    return result


def _describe(error: OSError | ca_files.CAError) -> str:
    if isinstance(error, OSError) and error.strerror and error.filename:
        return f"{error.filename}: {error.strerror}"
    return str(error) or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
