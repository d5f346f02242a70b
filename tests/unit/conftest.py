"""Fixtures of the unit tests: provider keys in the environment, a resolved state."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamakey.state import GatewayState
from llamakey.steps import redact
from tests.unit.builders import (
    ENV,
    make_state,
)


@pytest.fixture(autouse=True)
def provider_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Relative paths in a configuration (the audit database...) land in the test's own
    # directory, never in the working tree the tests were started from.
    monkeypatch.chdir(tmp_path)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LMK_UT_VECTARA_UNSET", raising=False)


@pytest.fixture
def state() -> GatewayState:
    return make_state()


@pytest.fixture
def isolated_log_scrubber(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Let a test install the (process-wide) log scrubber, and take it out afterwards."""
    factory = logging.getLogRecordFactory()
    monkeypatch.setattr(redact, "_installed_for", [])
    yield
    logging.setLogRecordFactory(factory)
