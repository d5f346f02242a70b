"""What the command modules share: loading the configuration, the client env file's name."""

from __future__ import annotations

import argparse
from pathlib import Path

from llamakey import config

# What `ArgumentParser.add_subparsers()` returns; each command module adds its parsers to it.
type Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

ENV_FILE = "llamakey_local.env"


def load_settings(path: Path) -> config.Settings:
    """The resolved configuration, or exit with its error (``lmk: …``, status 1)."""
    try:
        return config.load(path)
    except config.ConfigError as error:
        raise SystemExit(f"lmk: {error}") from None
