"""The config package: its public names, and its layer (it imports only providers, credentials)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from llamakey import config
from llamakey.config import edit, schema

# `from llamakey.config import load` is the function `load`; the module is reached by name.
load = importlib.import_module("llamakey.config.load")

PACKAGE = Path(config.__file__).parent
# What config may import from llamakey: itself and the layers below it.
ALLOWED = (
    "llamakey.config",
    "llamakey.providers",
    "llamakey.credentials",
    "llamakey.files",
    "llamakey.rules",
)


def llamakey_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            base = node.module or ""
            names |= {base} if base != "llamakey" else {f"llamakey.{a.name}" for a in node.names}
    return {name for name in names if name == "llamakey" or name.startswith("llamakey.")}


def test_config_imports_nothing_upward() -> None:
    modules = sorted(PACKAGE.glob("*.py"))
    assert {m.stem for m in modules} >= {"__init__", "schema", "load", "edit"}
    for module in modules:
        for name in llamakey_imports(module):
            assert name.startswith(ALLOWED), f"config/{module.name} imports {name}"


def test_public_names_are_re_exported() -> None:
    for name in (
        "ConfigError",
        "ConfigFile",
        "ProxyTable",
        "ProviderTable",
        "UserTable",
        "GroupTable",
        "AuditTable",
        "PriceTable",
        "parse",
    ):
        assert getattr(config, name) is getattr(schema, name), name
    for name in ("User", "KeyRing", "ResolvedProvider", "Settings", "resolve", "default_path"):
        assert getattr(config, name) is getattr(load, name), name
    # `config.load` is the function, not the module of the same name.
    assert config.load is load.load
    assert callable(config.load)
    assert set(config.__all__) <= set(dir(config))
    assert edit.add_user.__module__ == "llamakey.config.edit"
