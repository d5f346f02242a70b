"""`lmk_config.toml` and the users file (`lmk_users.toml`, `proxy.users_file`): read with
tomllib, validated with pydantic, resolved into `Settings`.

- `llamakey.config.schema`: the strict tables, `parse` and `parse_users` (errors name the file
  and TOML path and never echo a secret);
- `llamakey.config.load`: `resolve` and `load` into `Settings` (keys from ``${VAR}``, the users
  of both files);
- `llamakey.config.edit`: comment-preserving edits of the users file (add, rotate, disable,
  enable, remove a user), imported on its own (``from llamakey.config import edit``) so that
  the proxy does not load tomlkit.

The package imports only lower layers (`llamakey.providers`, `llamakey.credentials`).
"""

from llamakey.config.load import (
    DEFAULT_TRACE_DESTINATION,
    KeyRing,
    ResolvedProvider,
    Settings,
    TraceChoices,
    TraceDestination,
    TraceSettings,
    User,
    Webhook,
    default_path,
    load,
    load_users,
    policy_of,
    read_config,
    resolve,
    resolve_users,
    users_path_of,
)
from llamakey.config.schema import (
    DEFAULT_CONFIG_NAME,
    DEFAULT_USERS_NAME,
    USER_NAME_PATTERN,
    USER_NAME_RULE,
    AuditTable,
    ConfigError,
    ConfigFile,
    GroupTable,
    JwtTable,
    PriceTable,
    ProviderTable,
    ProxyTable,
    UsersFile,
    UserTable,
    is_user_name,
    parse,
    parse_users,
)

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "DEFAULT_TRACE_DESTINATION",
    "DEFAULT_USERS_NAME",
    "USER_NAME_PATTERN",
    "USER_NAME_RULE",
    "AuditTable",
    "ConfigError",
    "ConfigFile",
    "GroupTable",
    "JwtTable",
    "KeyRing",
    "PriceTable",
    "ProviderTable",
    "ProxyTable",
    "ResolvedProvider",
    "Settings",
    "TraceChoices",
    "TraceDestination",
    "TraceSettings",
    "User",
    "UserTable",
    "UsersFile",
    "Webhook",
    "default_path",
    "is_user_name",
    "load",
    "load_users",
    "parse",
    "parse_users",
    "policy_of",
    "read_config",
    "resolve",
    "resolve_users",
    "users_path_of",
]
