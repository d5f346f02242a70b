"""`lmk_config.toml`: read with tomllib, validated with pydantic, resolved into `Settings`.

- `llamakey.config.schema`: the strict tables and `parse` (errors name the TOML path and never
  echo a secret);
- `llamakey.config.load`: `resolve` and `load` into `Settings` (keys from ``${VAR}``);
- `llamakey.config.edit`: comment-preserving edits (add or remove a user), imported on its own
  (``from llamakey.config import edit``) so that the proxy does not load tomlkit.

The package imports only lower layers (`llamakey.providers`, `llamakey.credentials`).
"""

from llamakey.config.load import (
    KeyRing,
    ResolvedProvider,
    Settings,
    User,
    default_path,
    load,
    resolve,
)
from llamakey.config.schema import (
    DEFAULT_CONFIG_NAME,
    AuditTable,
    ConfigError,
    ConfigFile,
    GroupTable,
    PriceTable,
    ProviderTable,
    ProxyTable,
    UserTable,
    parse,
)

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "AuditTable",
    "ConfigError",
    "ConfigFile",
    "GroupTable",
    "KeyRing",
    "PriceTable",
    "ProviderTable",
    "ProxyTable",
    "ResolvedProvider",
    "Settings",
    "User",
    "UserTable",
    "default_path",
    "load",
    "parse",
    "resolve",
]
