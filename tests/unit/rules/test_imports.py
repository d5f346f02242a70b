"""The rules modules import on their own, first in a fresh interpreter (rules -> store ->
config -> rules was circular when the budgets module came first, as `lmk status` and the audit
report import it)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module", ["llamakey.rules.budgets", "llamakey.rules.usage_now", "llamakey.audit.report"]
)
def test_imports_first_in_a_fresh_interpreter(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
