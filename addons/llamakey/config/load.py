"""`lmk_config.toml` and the users file resolved into `Settings`: the built-in catalogue merged
with the config, provider keys expanded from the environment (``${VAR}``), the users of both
files indexed by key hash."""

from __future__ import annotations

import itertools
import os
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from llamakey.config import catalogue
from llamakey.config.schema import (
    DEFAULT_CONFIG_NAME,
    AlertsTable,
    ConfigError,
    ConfigFile,
    PolicyTable,
    ProviderTable,
    UsersFile,
    UserTable,
    open_proxy_problem,
    parse,
    parse_users,
    split_host_port,
)
from llamakey.credentials import HF_PREFIX, MASTER_PREFIX
from llamakey.providers import (
    BUILTIN_PROVIDERS,
    Provider,
    ProviderIndex,
)
from llamakey.rules import budgets, limits, policy
from llamakey.rules.policy import UserPolicy

JwtPublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
"""The public keys a JWT may be verified with (never a shared secret)."""

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class User:
    """A person allowed through the proxy."""

    name: str
    key_sha256: str | None  # None: no master key (a JWT identity only)
    groups: tuple[str, ...]
    disabled: bool
    expires: datetime | None
    traces: str | None = None
    """Their own trace destination (README "Traces"); kept here so a reload reports its change."""
    jwt_subject: str | None = None  # the JWT identity claim's value that is this user

    def refusal(self, now: datetime) -> str | None:
        """Why this user may not use the proxy now, or None."""
        if self.disabled:
            return "disabled"
        if self.expires is not None and now >= self.expires:
            return "expired"
        return None


@dataclass(slots=True)
class KeyRing:
    """The real keys of one provider, handed out round-robin."""

    keys: tuple[str, ...]
    _cycle: Iterator[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._cycle = itertools.cycle(self.keys)

    def next(self) -> str:
        return next(self._cycle)


@dataclass(frozen=True, slots=True)
class ResolvedProvider:
    """A provider with its real keys resolved from the environment."""

    provider: Provider
    keyring: KeyRing | None
    missing_key: str | None  # why there is no key, naming the setting to fix
    connect_to: tuple[str, int] | None
    upstream_ca: Path | None
    extra_headers: Mapping[str, str]


DEFAULT_TRACE_DESTINATION = "default"
"""The name `traces = "…"` gives ``[traces]``'s own endpoint."""


@dataclass(frozen=True, slots=True)
class TraceDestination:
    """One OTLP/HTTP receiver of spans, its headers expanded from the environment."""

    name: str
    where: str
    """Its TOML table: ``traces`` or ``traces.destinations.NAME``."""
    endpoint: str
    headers: tuple[tuple[str, str], ...]
    include_bodies: bool
    missing: str | None
    """Why it cannot export (a header's variable is unset), naming the setting; else None."""


@dataclass(frozen=True, slots=True)
class TraceSettings:
    """`[traces]` resolved: what the exporters are built from (equal after a reload that did
    not touch it, so they are kept)."""

    service_name: str
    timeout_seconds: float
    destinations: Mapping[str, TraceDestination]
    max_body_chars: int = 32 * 1024
    """Where a body in a span is cut (`traces.max_body_kb`)."""


@dataclass(frozen=True, slots=True)
class TraceChoices:
    """The ``traces = "NAME"`` of users' and groups' tables, and the default destination."""

    users: Mapping[str, str]
    groups: Mapping[str, str]
    default: str | None
    """``[traces]``'s own endpoint (`DEFAULT_TRACE_DESTINATION`) if it has one."""

    def destination(self, user: str | None, groups: Sequence[str]) -> str | None:
        """Where a user's spans go: their own choice, else that of the first of their groups
        (in the order their ``groups`` list gives) that names one, else the default. A flow
        with no user (a refused key) goes to the default."""
        if user is not None and (own := self.users.get(user)) is not None:
            return own
        for group in groups:
            if (chosen := self.groups.get(group)) is not None:
                return chosen
        return self.default


@dataclass(frozen=True, slots=True)
class Webhook:
    """``[alerts]`` resolved: where soft-limit alerts are POSTed, ``${VAR}`` references
    expanded. Every field but the timeouts may hold a secret: never logged."""

    url: str
    headers: Mapping[str, str]
    secret: bytes | None
    timeout_seconds: float
    retries: int


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the addons need, resolved once per (re)load."""

    path: Path | None
    file: ConfigFile
    providers: dict[str, ResolvedProvider]
    index: ProviderIndex
    users_by_hash: dict[str, User]
    """The users with a master key, by its SHA-256."""
    users: Mapping[str, User]
    """Every user by name (master key, JWT identity or both)."""
    users_by_subject: Mapping[str, User]
    """The users with a `jwt_subject`, by it."""
    jwt_public_key: JwtPublicKey | None
    """`[jwt] public_key_file`, read and loaded."""
    jwks_ca: Path | None
    """`[jwt] jwks_ca`, resolved against the config's directory."""
    certs_dir: Path
    audit_path: Path
    users_path: Path
    """The users file (`proxy.users_file`); it need not exist (then it holds no user)."""
    users_file: UsersFile
    """What the users file holds; `file.users` is what the config itself holds."""
    policies: Mapping[str, UserPolicy]
    """Each user's effective rules by name, compiled once per load (`rules.policy`)."""
    traces: TraceSettings | None = None
    """The span exporters' destinations; None when `[traces]` is off."""
    trace_choices: TraceChoices = field(default_factory=lambda: TraceChoices({}, {}, None))
    """Who sends spans where (`TraceChoices.destination`)."""
    webhook: Webhook | None = None
    """Where soft-limit alerts go (``[alerts]``), if anywhere."""
    models: catalogue.ModelCatalogue = field(default_factory=catalogue.ModelCatalogue)
    """The model catalogue (`[models]`): where requests for its names are routed."""

    @property
    def upstream_cas(self) -> tuple[Path, ...]:
        """Every extra CA to trust upstream (`upstream_ca` of providers and deployments)."""
        found = {p.upstream_ca for p in self.providers.values() if p.upstream_ca}
        found |= {d.upstream_ca for d in self.models.deployments() if d.upstream_ca}
        return tuple(sorted(found))

    @property
    def real_keys(self) -> list[str]:
        """Every real provider and deployment key, and every header value sent to a trace
        destination (its credentials): what the scrubber must never let out."""
        keys = [k for p in self.providers.values() if p.keyring for k in p.keyring.keys]
        keys += [k for d in self.models.deployments() for k in d.keys]
        if self.traces is not None:
            keys += [v for d in self.traces.destinations.values() for _, v in d.headers]
        return keys


def _expand(value: str) -> tuple[str | None, list[str]]:
    """Replace ${VAR} references from the environment; return (value or None, missing names)."""
    missing = [name for name in _ENV_REF.findall(value) if not os.environ.get(name)]
    if missing:
        return None, missing
    return _ENV_REF.sub(lambda m: os.environ[m.group(1)], value), []


def _resolve_keys(where: str, refs: list[str], path: Path | None) -> catalogue.Keys:
    """The real keys that `refs` (``${VAR}`` references, at TOML path `where`) expand to, or
    none and why, naming the setting to fix."""
    keys, unset_vars, master_keys = [], [], []
    for position, ref in enumerate(refs):
        value, unset = _expand(ref)
        if value and value.startswith((MASTER_PREFIX, HF_PREFIX + MASTER_PREFIX)):
            # A client environment (`lmk env`) sourced in the proxy's shell sets
            # OPENAI_API_KEY & co. to a master key: never send that upstream. The entry is
            # named, never its value.
            named = f" ({ref})" if _ENV_REF.fullmatch(ref) else ""
            master_keys.append(f"{where}[{position}]{named}")
        elif value:
            keys.append(value)
        unset_vars += unset
    if keys:
        reason = None
    elif master_keys:
        reason = (
            f"{', '.join(master_keys)} holds a LlaMaKey master key, not a provider key "
            "(was a client's llamakey_local.env sourced in the proxy's shell?)"
        )
    elif unset_vars:
        reason = (
            f"{where} refers to {', '.join(unset_vars)}, "
            "which is not set in the proxy's environment"
        )
    else:
        reason = f"{where} is not set in {path or DEFAULT_CONFIG_NAME}"
    return tuple(keys), reason


def resolve(
    file: ConfigFile,
    path: Path | None,
    users_file: UsersFile | None = None,
    users_source: Path | None = None,
) -> Settings:
    """Merge the built-in catalogue with the file and resolve keys from the environment; index
    the users of both files (`resolve_users`). `users_source` names the users file in errors
    (default: `proxy.users_file` beside `path`)."""
    users_file = users_file or UsersFile()
    base = path.parent if path else Path.cwd()
    if problem := open_proxy_problem(file.proxy.listen_host, file.proxy):
        raise ConfigError(problem)
    providers: dict[str, ResolvedProvider] = {}
    for name in {*BUILTIN_PROVIDERS, *file.providers}:
        table = file.providers.get(name, ProviderTable())
        builtin = BUILTIN_PROVIDERS.get(name)
        if builtin is None and not table.hosts:
            raise ConfigError(
                f"providers.{name}.hosts: a provider that is not built in needs hosts"
            )
        if table.disabled:
            continue
        provider = _merge_provider(name, builtin, table)
        keys, reason = _resolve_keys(f"providers.{name}.keys", table.keys, path)
        extra: dict[str, str] = {}
        for header, ref in table.extra_headers.items():
            value, _ = _expand(ref)
            if value:
                extra[header.lower()] = value
        providers[name] = ResolvedProvider(
            provider=provider,
            keyring=KeyRing(keys) if keys else None,
            missing_key=reason,
            connect_to=split_host_port(table.connect_to) if table.connect_to else None,
            upstream_ca=(base / table.upstream_ca) if table.upstream_ca else None,
            extra_headers=extra,
        )
    users_path = base / file.proxy.users_file
    users = resolve_users(
        file,
        users_file,
        str(path or DEFAULT_CONFIG_NAME),
        str(users_source or users_path),
    )
    config_source = str(path or DEFAULT_CONFIG_NAME)
    jwt = file.jwt
    if (
        jwt is not None
        and jwt.unknown_identity != "refuse"
        and jwt.unknown_identity not in file.groups
    ):
        raise ConfigError(
            f"{config_source}: jwt.unknown_identity: got {jwt.unknown_identity!r}, expected "
            f'"refuse" or a group with a [groups.{jwt.unknown_identity}] table'
        )
    _check_policy_providers(
        file,
        users_file,
        {*BUILTIN_PROVIDERS, *file.providers},
        config_source,
        str(users_source or users_path),
    )
    traces, choices = _traces(file, users_file, config_source, str(users_source or users_path))
    index = ProviderIndex(p.provider for p in providers.values())
    models = catalogue.resolve_models(
        file.models,
        index,
        base,
        lambda where, refs: _resolve_keys(where, refs, path),
        {n: (p.keyring.keys if p.keyring else (), p.missing_key) for n, p in providers.items()},
    )
    return Settings(
        traces=traces,
        trace_choices=choices,
        webhook=_webhook(file.alerts),
        policies=_policies(file, users_file),
        models=models,
        path=path,
        file=file,
        providers=providers,
        index=index,
        users_by_hash={u.key_sha256: u for u in users.values() if u.key_sha256},
        users=users,
        users_by_subject={u.jwt_subject: u for u in users.values() if u.jwt_subject},
        jwt_public_key=_public_key(base / jwt.public_key_file, config_source)
        if jwt and jwt.public_key_file
        else None,
        jwks_ca=base / jwt.jwks_ca if jwt and jwt.jwks_ca else None,
        certs_dir=(base / file.proxy.certs_dir).resolve(),
        audit_path=(base / file.audit.path).resolve(),
        users_path=users_path.resolve(),
        users_file=users_file,
    )


def _traces(
    file: ConfigFile, users_file: UsersFile, config_source: str, users_source: str
) -> tuple[TraceSettings | None, TraceChoices]:
    """`[traces]` resolved (None when off), and who sends spans where (README "Traces").
    Every ``traces = "NAME"`` must name a destination of the file, checked whether tracing
    is on or not."""
    table = file.traces
    known = set(table.destinations)
    if DEFAULT_TRACE_DESTINATION in known:
        raise ConfigError(
            f"{config_source}: traces.destinations.{DEFAULT_TRACE_DESTINATION}: the name "
            f"{DEFAULT_TRACE_DESTINATION!r} is [traces]'s own endpoint; choose another"
        )
    if table.endpoint:
        known.add(DEFAULT_TRACE_DESTINATION)
    wanted = ["traces.include_bodies"] if table.include_bodies else []
    wanted += [
        f"traces.destinations.{name}.include_bodies"
        for name, destination in table.destinations.items()
        if destination.include_bodies
    ]
    if wanted and not file.audit.log_bodies:
        raise ConfigError(
            f"{config_source}: {', '.join(wanted)} = true needs audit.log_bodies = true "
            "(prompts and completions leave the proxy only when the audit log keeps them)"
        )
    named: list[tuple[str, str, str | None]] = [
        (config_source, f"groups.{n}", g.traces) for n, g in file.groups.items()
    ]
    users = {**file.users, **users_file.users}
    named += [(config_source, f"users.{n}", u.traces) for n, u in file.users.items()]
    named += [(users_source, f"users.{n}", u.traces) for n, u in users_file.users.items()]
    for source, where, name in named:
        if name is not None and name not in known:
            expected = ", ".join(sorted(known)) or "none is defined"
            raise ConfigError(
                f"{source}: {where}.traces: got {name!r}, expected a [traces.destinations.NAME] "
                f"table (defined: {expected})"
            )
    choices = TraceChoices(
        users={n: u.traces for n, u in users.items() if u.traces is not None},
        groups={n: g.traces for n, g in file.groups.items() if g.traces is not None},
        default=DEFAULT_TRACE_DESTINATION if table.endpoint else None,
    )
    if not table.enabled:
        return None, choices
    destinations = {
        name: _trace_destination(
            name,
            f"traces.destinations.{name}",
            d.endpoint,
            d.headers,
            table.include_bodies if d.include_bodies is None else d.include_bodies,
        )
        for name, d in table.destinations.items()
    }
    if table.endpoint:
        destinations[DEFAULT_TRACE_DESTINATION] = _trace_destination(
            DEFAULT_TRACE_DESTINATION,
            "traces",
            table.endpoint,
            table.headers,
            table.include_bodies,
        )
    traces = TraceSettings(
        table.service_name, table.timeout_seconds, destinations, table.max_body_kb * 1024
    )
    return traces, choices


def _trace_destination(
    name: str, where: str, endpoint: str, headers: Mapping[str, str], include_bodies: bool
) -> TraceDestination:
    expanded: list[tuple[str, str]] = []
    unset: list[str] = []
    for header, ref in headers.items():
        value, missing = _expand(ref)
        if value is not None:
            expanded.append((header, value))
        unset += [f"{where}.headers.{header} ({var})" for var in missing]
    missing_text = f"{', '.join(unset)}: not set in the proxy's environment" if unset else None
    return TraceDestination(name, where, endpoint, tuple(expanded), include_bodies, missing_text)


def _webhook(alerts: AlertsTable) -> Webhook | None:
    """``[alerts]`` with its ``${VAR}`` references expanded; an unset one is an error naming
    its TOML path (an alert that silently goes nowhere is what a soft limit must not do)."""
    if alerts.webhook_url is None:
        return None

    def expanded(value: str, where: str) -> str:
        result, missing = _expand(value)
        if result is None:
            raise ConfigError(
                f"{where} refers to {', '.join(missing)}, which is not set in the proxy's "
                "environment"
            )
        return result

    return Webhook(
        url=expanded(alerts.webhook_url, "alerts.webhook_url"),
        headers={k: expanded(v, f"alerts.headers.{k}") for k, v in alerts.headers.items()},
        secret=expanded(alerts.secret, "alerts.secret").encode() if alerts.secret else None,
        timeout_seconds=alerts.timeout_seconds,
        retries=alerts.retries,
    )


def _lists(table: PolicyTable) -> tuple[policy.ListsByProvider, policy.ListsByProvider]:
    return table.endpoints, table.models


def _policies(file: ConfigFile, users_file: UsersFile) -> Mapping[str, UserPolicy]:
    """Every user's effective policy (README "Rules"), built once per load."""
    return {
        name: policy_of(file, name, user.groups, user)
        for name, user in {**file.users, **users_file.users}.items()
    }


def policy_of(
    file: ConfigFile, name: str, groups: Iterable[str], own: PolicyTable | None
) -> UserPolicy:
    """The effective policy of user `name` in `groups` with their own table `own` (None: a JWT
    identity no user names): `[defaults]`, then the groups, then their own table."""
    groups = tuple(groups)
    own = own or PolicyTable()
    built = policy.build(
        _lists(own),
        ((f"groups.{g}", _lists(file.groups[g])) for g in groups if g in file.groups),
        _lists(file.defaults),
        f"users.{name}",
    )
    specs: list[tuple[limits.LimitSpec, str | None]] = [
        (s, None) for s in _limit_specs(file.defaults, "defaults")
    ]
    costs: list[tuple[budgets.BudgetSpec, str | None]] = [
        (s, None) for s in _budget_specs(file.defaults, "defaults")
    ]
    for group in dict.fromkeys(groups):
        if (table := file.groups.get(group)) is not None:
            specs += [(s, group) for s in _limit_specs(table, f"groups.{group}")]
            costs += [(s, group) for s in _budget_specs(table, f"groups.{group}")]
    specs += [(s, None) for s in _limit_specs(own, f"users.{name}")]
    costs += [(s, None) for s in _budget_specs(own, f"users.{name}")]
    if specs:
        built = replace(built, rate_limits=limits.compile_limits(name, groups, specs))
    if costs:
        built = replace(built, budgets=budgets.compile_budgets(name, groups, costs))
    return built


def _limit_specs(table: PolicyTable, where: str) -> list[limits.LimitSpec]:
    return [
        limits.LimitSpec(
            unit="requests" if entry.requests is not None else "tokens",
            amount=entry.requests if entry.requests is not None else entry.tokens or 0,
            per=entry.per,
            scope=entry.scope,
            provider=entry.provider,
            model=entry.model,
            reserve_output=entry.reserve_output,
            source=f"{where}.rate_limits.{position}",
            warn_at=entry.warn_at,
        )
        for position, entry in enumerate(table.rate_limits)
    ]


def _budget_specs(table: PolicyTable, where: str) -> list[budgets.BudgetSpec]:
    return [
        budgets.BudgetSpec(
            usd=entry.usd,
            per=entry.per,
            scope=entry.scope,
            provider=entry.provider,
            model=entry.model,
            reserve_output=entry.reserve_output,
            source=f"{where}.budgets.{position}",
            warn_at=entry.warn_at,
        )
        for position, entry in enumerate(table.budgets)
    ]


def _check_policy_providers(
    file: ConfigFile, users_file: UsersFile, known: set[str], config_source: str, users_source: str
) -> None:
    """Every provider a rule names is one this configuration knows (a typo would otherwise
    leave the intended provider unrestricted)."""
    tables: list[tuple[str, str, PolicyTable]] = [(config_source, "defaults", file.defaults)]
    tables += [(config_source, f"groups.{n}", t) for n, t in file.groups.items()]
    tables += [(config_source, f"users.{n}", t) for n, t in file.users.items()]
    tables += [(users_source, f"users.{n}", t) for n, t in users_file.users.items()]
    for source, where, table in tables:
        for kind, lists in (("endpoints", table.endpoints), ("models", table.models)):
            for provider in lists or {}:
                if provider not in known:
                    raise ConfigError(
                        f"{source}: {where}.{kind}.{provider}: unknown provider (expected one "
                        f"of {', '.join(sorted(known))})"
                    )
        entries: list[tuple[str, int, str | None]] = [
            ("rate_limits", i, e.provider) for i, e in enumerate(table.rate_limits)
        ]
        entries += [("budgets", i, e.provider) for i, e in enumerate(table.budgets)]
        for kind, position, named in entries:
            if named is not None and named not in known:
                raise ConfigError(
                    f"{source}: {where}.{kind}.{position}.provider: unknown provider "
                    f"{named!r} (expected one of {', '.join(sorted(known))})"
                )


def resolve_users(
    file: ConfigFile, users_file: UsersFile, config_source: str, users_source: str
) -> dict[str, User]:
    """The users of the config's ``[users]`` (kept for compatibility) and of the users file,
    by name.

    Raises ConfigError, naming the file and TOML path, for a name in both files, a key or a
    `jwt_subject` shared by two users, or a group with no ``[groups.G]`` table in the config.
    """
    tables: list[tuple[str, str, UserTable]] = [
        (config_source, name, user) for name, user in file.users.items()
    ]
    for name, user in users_file.users.items():
        if name in file.users:
            raise ConfigError(
                f"users.{name} is in both {config_source} and {users_source}; keep one "
                f"(`lmk keys` manages {users_source})"
            )
        tables.append((users_source, name, user))
    users: dict[str, User] = {}
    holders: dict[tuple[str, str], str] = {}  # (field, value) -> the user name holding it
    sources: dict[str, str] = {}
    for source, name, user in tables:
        for what, value in (("key_sha256", user.key_sha256), ("jwt_subject", user.jwt_subject)):
            if value is None:
                continue
            if (other := holders.get((what, value))) is not None:
                where = "" if sources[other] == source else f" of {sources[other]}"
                same = "key" if what == "key_sha256" else "JWT identity"
                raise ConfigError(
                    f"{source}: users.{name}.{what}: same {same} as users.{other}{where}"
                )
            holders[(what, value)] = name
        sources[name] = source
        for group in user.groups:
            if group not in file.groups:
                raise ConfigError(
                    f"{source}: users.{name}.groups: got {group!r}, expected a "
                    f"[groups.{group}] table in {config_source}"
                )
        users[name] = User(
            name=name,
            key_sha256=user.key_sha256,
            groups=tuple(user.groups),
            disabled=user.disabled,
            expires=_as_utc(user.expires),
            traces=user.traces,
            jwt_subject=user.jwt_subject,
        )
    return users


def _public_key(path: Path, source: str) -> JwtPublicKey:
    """The PEM public key `[jwt] public_key_file` names (blocking read)."""
    where = f"{source}: jwt.public_key_file {path}"
    try:
        loaded = load_pem_public_key(path.read_bytes())
    except OSError as error:
        raise ConfigError(f"{where}: cannot read: {error.strerror}") from None
    except (ValueError, TypeError):
        raise ConfigError(f"{where}: not a PEM public key") from None
    if not isinstance(
        loaded, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
    ):
        raise ConfigError(f"{where}: expected an RSA, EC or Ed25519 public key")
    return loaded


def _merge_provider(name: str, builtin: Provider | None, table: ProviderTable) -> Provider:
    # Everything the file does not set comes from the catalogue entry; a provider added by the
    # file gets the defaults of one (OpenAI-compatible usage, no prices, no key variables).
    base = builtin or Provider(name, ())
    carrier = table.carrier or base.default_carrier
    carriers = (builtin.carriers if builtin else frozenset()) | {carrier}
    return replace(
        base,
        hosts=tuple(table.hosts) if table.hosts else base.hosts,
        default_carrier=carrier,
        carriers=carriers,
        error_shape=table.error_shape or base.error_shape,
    )


def _as_utc(value: date | datetime | None) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def load(path: Path) -> Settings:
    """Read, validate and resolve a config file and its users file (blocking file reads)."""
    return load_users(read_config(path), path)


def read_config(path: Path) -> ConfigFile:
    """Read and validate the config file alone (`load`'s first half)."""
    data = _read_toml(path)
    if data is None:
        raise ConfigError(
            f"{path}: no such file (start from the lmk_config.toml shipped with LlaMaKey)"
        )
    return parse(data, str(path))


def load_users(file: ConfigFile, path: Path) -> Settings:
    """Read and validate the users file of the config `file` read from `path`, and resolve
    both (`load`'s second half). No users file: no users in it."""
    users_path = users_path_of(file, path)
    users_file = parse_users(_read_toml(users_path) or {}, str(users_path))
    return resolve(file, path.resolve(), users_file, users_path)


def users_path_of(file: ConfigFile, path: Path) -> Path:
    """Where the users file of the config at `path` is (it need not exist)."""
    return path.parent / file.proxy.users_file


def _read_toml(path: Path) -> dict[str, object] | None:
    """A TOML file's data, None if there is no such file; ConfigError naming it otherwise."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text: {error.reason}") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None


def default_path() -> Path:
    """$LMK_CONFIG, else ./lmk_config.toml."""
    return Path(os.environ.get("LMK_CONFIG", DEFAULT_CONFIG_NAME))
