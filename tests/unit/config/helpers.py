"""Helpers of the configuration tests (and of the `lmk` tests, which edit the same file)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from llamakey import config

SHIPPED = Path(__file__).resolve().parents[3] / "lmk_config.toml"


def config_error(data: Mapping[str, Any]) -> str:
    """The message of the ConfigError that parsing and resolving `data` must raise."""
    with pytest.raises(config.ConfigError) as caught:
        config.resolve(config.parse(data, "lmk_config.toml"), None)
    return str(caught.value)


def comments(text: str) -> list[str]:
    """Every comment of a TOML file in order (the shipped file has no '#' inside strings)."""
    return [line[line.index("#") :].rstrip() for line in text.splitlines() if "#" in line]


def is_subsequence(lines: list[str], within: list[str]) -> bool:
    rest = iter(within)
    return all(line in rest for line in lines)
