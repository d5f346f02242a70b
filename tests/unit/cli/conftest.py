"""Fixtures of the `lmk` tests: a temporary copy of the shipped lmk_config.toml."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llamakey.providers import BUILTIN_PROVIDERS
from tests.unit.config.helpers import SHIPPED

# The groups the tests name, as an admin defines them under [groups] of the tracked config.
GROUPS = '\n[groups]\nresearch = { description = "the lab" }\nops = {}\n'


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped configuration, with groups research and ops defined (as an admin
    does before `lmk keys new NAME --group G`), and no provider key in the environment."""
    for provider in BUILTIN_PROVIDERS.values():
        for var in provider.key_env:
            monkeypatch.delenv(var, raising=False)
    for var in ("VECTARA_CUSTOMER_ID", "LMK_MASTER_KEY", "LMK_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "lmk_config.toml"
    shutil.copyfile(SHIPPED, path)
    text = path.read_text(encoding="utf-8")
    assert text.count("\n[groups]\n") == 1
    path.write_text(text.replace("\n[groups]\n", GROUPS, 1), encoding="utf-8")
    return path
