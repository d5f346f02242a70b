"""The tables of `lmk_config.toml` and of the users file (`lmk_users.toml`) as strict pydantic
models, and `parse` / `parse_users`, which validate.

Every table refuses unknown keys, and an error names the file, the TOML path, the bad value and
what was expected, e.g. ``proxy.listen_port: got 'eighty', expected an integer``. Values that
may hold a secret (provider keys, extra headers) are never echoed in an error.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from llamakey.providers import Carrier, ErrorShape
from llamakey.rules.models import check_model_pattern
from llamakey.rules.paths import check_endpoint

DEFAULT_CONFIG_NAME = "lmk_config.toml"
DEFAULT_USERS_NAME = "lmk_users.toml"
USER_NAME_PATTERN = r"^[a-z][a-z0-9_.-]{0,63}$"
USER_NAME_RULE = "a lowercase letter, then up to 63 of a-z 0-9 _ . -"
_SECRET_FIELDS = {
    "keys",
    "extra_headers",
    "redis_url",
    "webhook_url",
    "headers",
    "secret",
    "endpoint",
}
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
"""A model, alias or deployment name of `[models]` (it appears in audit rows and logs)."""


class ConfigError(Exception):
    """The configuration file is missing, unreadable or invalid; the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProxyTable(_Strict):
    """[proxy]: where the proxy listens and what it does with non-provider traffic."""

    listen_host: str = "127.0.0.1"
    listen_port: Annotated[int, Field(ge=0, le=65535)] = 8080
    other_hosts: Literal["tunnel", "block"] = "tunnel"
    proxy_auth: bool = False
    certs_dir: str = "certs"
    users_file: Annotated[str, Field(min_length=1)] = DEFAULT_USERS_NAME
    """The users and their key hashes (`lmk keys` writes it); relative to the config file."""
    web_host: str = "127.0.0.1"
    web_port: Annotated[int, Field(ge=0, le=65535)] = 8081


class ProviderTable(_Strict):
    """[providers.NAME]: overrides a built-in provider, or adds one (then `hosts` is required)."""

    hosts: list[str] | None = None
    keys: list[str] = []
    carrier: Carrier | None = None
    error_shape: ErrorShape | None = None
    connect_to: str | None = None
    upstream_ca: str | None = None
    extra_headers: dict[str, str] = {}
    disabled: bool = False

    @field_validator("connect_to")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            split_host_port(value)
        return value

    @field_validator("hosts")
    @classmethod
    def _hostnames(cls, value: list[str] | None) -> list[str] | None:
        for host in value or []:
            if not re.fullmatch(r"(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?", host):
                raise ValueError("expected host names like 'api.example.com' or '*.example.com'")
        return value


EndpointPatternText = Annotated[str, AfterValidator(check_endpoint)]
ModelPatternText = Annotated[str, AfterValidator(check_model_pattern)]


WarnAt = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]
"""A soft limit: the fraction of a rate limit or budget (``0.8``) at which the proxy warns once
per window (README "Rules", and ``[alerts]``)."""


class RateLimitTable(_Strict):
    """One entry of ``rate_limits`` (README "Rules"): a number of requests or tokens per window,
    counted per user, group or the whole gateway, optionally for one provider or model glob."""

    requests: Annotated[int, Field(gt=0)] | None = None
    tokens: Annotated[int, Field(gt=0)] | None = None
    per: Literal["minute", "hour", "day"]
    scope: Literal["user", "group", "gateway"] = "user"
    provider: Annotated[str, Field(min_length=1)] | None = None
    model: ModelPatternText | None = None
    reserve_output: Annotated[int, Field(ge=0)] = 1024
    """Tokens reserved for the answer when the request sets no ``max_tokens`` (token limits)."""
    warn_at: WarnAt | None = None

    @model_validator(mode="after")
    def _one_amount(self) -> RateLimitTable:
        if (self.requests is None) == (self.tokens is None):
            raise ValueError("expected exactly one of requests = N or tokens = N")
        return self


class BudgetTable(_Strict):
    """One entry of ``budgets`` (README "Rules"): USD per UTC day, week (from Monday) or
    calendar month, per user, group or the whole gateway, optionally for one provider or model."""

    usd: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    per: Literal["day", "week", "month"]
    scope: Literal["user", "group", "gateway"] = "user"
    provider: Annotated[str, Field(min_length=1)] | None = None
    model: ModelPatternText | None = None
    reserve_output: Annotated[int, Field(ge=0)] = 1024
    """Output tokens priced into the reservation when the request sets no ``max_tokens``."""
    warn_at: WarnAt | None = None


class PolicyTable(_Strict):
    """The rules of `[defaults]`, `[groups.G]` and `[users.U]` (README "Rules"): allow-lists per
    provider. A list left out says nothing (the next level decides); an empty list allows none."""

    endpoints: dict[str, list[EndpointPatternText]] | None = None
    """Per provider: ``"METHOD /path"`` patterns (`rules.paths`)."""
    models: dict[str, list[ModelPatternText]] | None = None
    """Per provider: model glob patterns (`rules.models`)."""
    rate_limits: list[RateLimitTable] = []
    """Every applicable limit of every level applies (`rules.limits`)."""
    budgets: list[BudgetTable] = []
    """Every applicable budget of every level applies (`rules.budgets`)."""


TraceDestinationName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
"""A ``[traces.destinations.NAME]`` table's name."""

UserName = Annotated[str, Field(pattern=USER_NAME_PATTERN)]
"""A user's name: it appears in logs, audit rows, markers and proxy credentials."""


def is_user_name(name: str) -> bool:
    return re.fullmatch(USER_NAME_PATTERN, name) is not None


class UserTable(PolicyTable):
    """[users.NAME]: one person, how they prove who they are (the SHA-256 of their master key,
    the identity claim of their JWT, or both), and their own rules."""

    key_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    jwt_subject: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    """The value of `[jwt] identity_claim` (``oid``, ``sub``, ``email``…) that is this user."""
    groups: list[str] = []
    disabled: bool = False
    traces: TraceDestinationName | None = None
    """Where this user's spans go, overriding their groups' (README "Traces")."""
    expires: date | datetime | None = None
    """Refused from then on: a date (00:00 UTC that day) or a date-time (UTC unless it says)."""

    @field_validator("expires", mode="before")
    @classmethod
    def _moment(cls, value: object) -> object:
        # One error naming the TOML forms, not one per member of the union.
        if value is None or isinstance(value, date):  # a datetime is a date too
            return value
        if isinstance(value, str):
            for parse_iso in (date.fromisoformat, datetime.fromisoformat):
                try:
                    return parse_iso(value)
                except ValueError:
                    pass
        raise ValueError("expected a TOML date (2027-01-01) or date-time (2027-01-01T09:00:00Z)")

    @model_validator(mode="after")
    def _some_credential(self) -> UserTable:
        if self.key_sha256 is None and self.jwt_subject is None:
            raise ValueError(
                "expected key_sha256 (a master key, `lmk keys new`) or jwt_subject (a JWT "
                "identity), or both"
            )
        return self


# The asymmetric algorithms PyJWT verifies with a public key (JWKS or PEM). `none` and the HMAC
# ones are refused by name: a shared secret is no public key, and a public key used as an HMAC
# secret is the classic forgery (anyone holding the public key signs).
JwtAlgorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"
]


class JwtTable(_Strict):
    """[jwt]: bearer JWTs from an identity provider, accepted wherever a master key is
    (README "JWT identities")."""

    issuer: Annotated[str, Field(min_length=1)]
    """The exact ``iss`` a token must carry."""
    audience: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    """The ``aud`` values accepted (a token naming any one of them passes)."""
    algorithms: Annotated[list[JwtAlgorithm], Field(min_length=1)]
    """The signature algorithms accepted: an explicit list, never ``none`` or HMAC."""
    jwks_url: str | None = None
    """Where the identity provider publishes its keys (https://…/keys)."""
    public_key_file: str | None = None
    """Or one PEM public key (relative to the config file)."""
    jwks_ca: str | None = None
    """An extra CA to trust for `jwks_url` (added to certifi's roots)."""
    jwks_cache_seconds: Annotated[int, Field(ge=1)] = 3600
    """The key set is fetched again when it is this old."""
    jwks_refresh_seconds: Annotated[int, Field(ge=0)] = 60
    """At most one fetch per this interval for a token whose ``kid`` is not in the key set."""
    jwks_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0
    leeway_seconds: Annotated[int, Field(ge=0, le=300)] = 30
    """Clock skew allowed on ``exp``, ``nbf`` and ``iat``."""
    identity_claim: Annotated[str, Field(min_length=1)] = "sub"
    """The claim naming the person: matched against `users.NAME.jwt_subject`."""
    groups_claim: Annotated[str, Field(min_length=1)] | None = None
    """A claim holding a list of group names; those defined in [groups] are added."""
    unknown_identity: Annotated[str, Field(min_length=1)] = "refuse"
    """An identity no user names: "refuse" (401), or the [groups] group it gets."""

    @field_validator("algorithms", mode="before")
    @classmethod
    def _no_symmetric(cls, value: object) -> object:
        for name in value if isinstance(value, list) else ():
            if isinstance(name, str) and name.lower() == "none":
                raise ValueError("'none' is never accepted: every token must be signed")
            if isinstance(name, str) and name.upper().startswith("HS"):
                raise ValueError(
                    f"{name!r} is an HMAC algorithm: it needs a shared secret, and keys here "
                    "are public (a public key used as an HMAC secret lets anyone sign)"
                )
        return value

    @field_validator("jwks_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
            raise ValueError("expected an https:// URL (http:// only on a trusted network)")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> JwtTable:
        if (self.jwks_url is None) == (self.public_key_file is None):
            raise ValueError("expected exactly one of jwks_url or public_key_file")
        return self


class GroupTable(PolicyTable):
    """[groups.NAME]: a set of users (rules and reports hang on groups)."""

    description: str = ""
    traces: TraceDestinationName | None = None
    """Where its members' spans go (README "Traces"): a ``[traces.destinations.NAME]``."""


class AuditTable(_Strict):
    """[audit]: the SQLite audit log."""

    enabled: bool = True
    path: str = "lmk_audit.db"
    log_bodies: bool = False
    retention_days: Annotated[int, Field(ge=0)] = 0


class LimitsTable(_Strict):
    """[limits]: what one request or connection may take of the proxy."""

    max_request_mb: Annotated[float, Field(gt=0)] = 32.0
    """A larger request body is refused with 413 before anything goes upstream."""
    max_header_kb: Annotated[int, Field(gt=0)] = 64
    """A request whose target and headers are larger is refused with 431."""
    max_response_mb: Annotated[float, Field(gt=0)] = 256.0
    """A larger answer that is kept whole (not streamed) ends the flow: a memory bound."""
    idle_timeout_seconds: Annotated[int, Field(gt=0)] = 600
    """A client or upstream connection idle this long is closed."""


class StateTable(_Strict):
    """[state]: where rate-limit and budget counters live (one proxy, workers, many proxies)."""

    backend: Literal["local", "sqlite", "redis"] = "local"
    """local: this process's memory; sqlite: a file the proxy processes of one machine share;
    redis: a Redis or Valkey server that several proxies share."""
    path: Annotated[str, Field(min_length=1)] = "lmk_state.db"
    """The SQLite file (backend = "sqlite"); relative to the config file."""
    redis_url: str | None = None
    """e.g. redis://10.0.0.7:6379/0 (backend = "redis"); may hold a password."""
    on_store_error: Literal["deny", "allow"] = "deny"
    """When the store cannot be reached: deny (503, nothing goes upstream) or allow."""

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"(rediss?|unix)://\S+", value):
            raise ValueError("expected a URL like redis://host:6379/0, rediss://… or unix://…")
        return value

    @model_validator(mode="after")
    def _backend_needs(self) -> StateTable:
        if self.backend == "redis" and self.redis_url is None:
            raise ValueError('backend = "redis" needs redis_url (e.g. "redis://127.0.0.1:6379/0")')
        return self


def _check_otlp_endpoint(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/?#@]+(/\S*)?", value):
        raise ValueError(
            "expected the OTLP/HTTP traces URL, e.g. 'http://127.0.0.1:4318/v1/traces' "
            "(credentials go in headers, not in the URL)"
        )
    return value


OtlpEndpoint = Annotated[str, AfterValidator(_check_otlp_endpoint)]


class TraceDestinationTable(_Strict):
    """[traces.destinations.NAME]: an OTLP/HTTP receiver of its own (a team's Langfuse
    project, say), chosen by ``traces = "NAME"`` in a group's or a user's table."""

    endpoint: OtlpEndpoint
    headers: dict[str, str] = {}
    """Sent with every export (credentials: ``${VAR}`` references, as for provider keys)."""
    include_bodies: bool | None = None
    """Prompt and completion text to this destination; unset: ``traces.include_bodies``."""


class TracesTable(_Strict):
    """[traces]: OpenTelemetry spans of every provider call, exported over OTLP/HTTP."""

    enabled: bool = False
    endpoint: OtlpEndpoint | None = None
    """The default destination: users whose groups and own table name none. Unset: only the
    named destinations get spans."""
    headers: dict[str, str] = {}
    """Sent with every export to `endpoint` (``${VAR}`` references are expanded)."""
    service_name: Annotated[str, Field(min_length=1)] = "llamakey"
    include_bodies: bool = False
    """Prompt and completion text in the spans; needs ``audit.log_bodies = true``."""
    max_body_kb: Annotated[int, Field(gt=0, le=1024)] = 32
    """Each body in a span is cut after this many KiB of text: spans wait in a queue of 2048
    while a collector is down, and a batch of 512 must stay under the exporter's 64 MiB."""
    timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 10.0
    """How long one export may take, retries included (on the exporter's thread)."""
    destinations: dict[TraceDestinationName, TraceDestinationTable] = {}


class AlertsTable(_Strict):
    """[alerts]: where a soft limit (``warn_at``) reached is POSTed as JSON, besides the log."""

    webhook_url: str | None = None
    """http(s)://…; may hold a token (``${VAR}`` references are expanded), never logged."""
    headers: dict[str, str] = {}
    """Extra request headers, e.g. ``Authorization``; values may be ``${VAR}`` references."""
    secret: str | None = None
    """Signs each body: ``X-LlaMaKey-Signature: sha256=<HMAC-SHA256 of the body, hex>``."""
    timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    """Further attempts after a failed POST (network error, timeout, HTTP 5xx or 429)."""

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s/?#]+\S*", value):
            raise ValueError("expected a URL like https://hooks.example.com/lmk")
        return value


class PriceTable(_Strict):
    """[prices."MODEL"]: USD per million tokens, overriding genai-prices for that model."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cache_read_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None


class DeploymentTable(_Strict):
    """One entry of ``[models.NAME] deployments`` (README "Model catalogue and routing"): where
    a catalogued model is served, with its own key and weight."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    kind: Literal["openai", "azure", "openai_compatible"]
    base_url: str | None = None
    """openai (default https://api.openai.com/v1) and openai_compatible (required): the URL the
    API's paths (``/chat/completions``, ``/embeddings``, ``/responses``) hang under."""
    endpoint: str | None = None
    """azure (required): the resource, ``https://RESOURCE.openai.azure.com``."""
    deployment: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None
    """azure (required): the deployment's name in the resource."""
    api_version: Annotated[str, Field(pattern=r"^[0-9A-Za-z.-]{1,40}$")] | None = None
    """azure (required): the ``api-version`` query every Azure OpenAI call carries."""
    model: Annotated[str, Field(min_length=1)] | None = None
    """The model name the target knows (the body's ``model``); default: the catalogue name."""
    keys: list[str] = []
    """Its real keys, as ``${VAR}`` references; empty: the keys of the provider of its host."""
    weight: Annotated[int, Field(ge=0, le=1000)] = 1
    """Its share of the requests; 0: used only when every other deployment failed."""
    responses: bool | None = None
    """Whether it serves the Responses API (default: yes for openai and azure, no otherwise)."""
    connect_to: str | None = None
    """Dial ``host:port`` instead (like ``curl --connect-to``; Host and TLS name unchanged)."""
    upstream_ca: str | None = None
    """An extra CA to trust for this deployment (added to certifi's roots)."""

    @field_validator("connect_to")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            split_host_port(value)
        return value

    @field_validator("base_url", "endpoint")
    @classmethod
    def _https_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(
            r"https://[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?", value
        ):
            raise ValueError("expected an https:// URL like 'https://api.example.com/v1'")
        return value

    @model_validator(mode="after")
    def _kind_needs(self) -> DeploymentTable:
        if self.kind == "azure":
            missing = [
                f for f in ("endpoint", "deployment", "api_version") if getattr(self, f) is None
            ]
            if missing:
                raise ValueError(f'kind = "azure" needs {", ".join(missing)}')
            if self.base_url is not None:
                raise ValueError('kind = "azure" takes endpoint, not base_url')
            if self.endpoint and self.endpoint.split("//", 1)[1].strip("/").count("/"):
                raise ValueError("endpoint: expected the resource alone, with no path")
        else:
            if self.kind == "openai_compatible" and self.base_url is None:
                raise ValueError('kind = "openai_compatible" needs base_url')
            extra = [f for f in ("endpoint", "deployment", "api_version") if getattr(self, f)]
            if extra:
                raise ValueError(f'{", ".join(extra)}: only for kind = "azure"')
        return self


class ModelTable(_Strict):
    """[models.NAME]: a catalogued model, the other names it answers to, and its deployments."""

    aliases: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = []
    deployments: Annotated[list[DeploymentTable], Field(min_length=1)]
    cooldown_seconds: Annotated[float, Field(ge=0, le=3600, allow_inf_nan=False)] = 30.0
    """How long a deployment is skipped after a 429, a 5xx or a connection error that names
    no ``Retry-After``."""


class ConfigFile(_Strict):
    """The whole file."""

    proxy: ProxyTable = ProxyTable()
    audit: AuditTable = AuditTable()
    limits: LimitsTable = LimitsTable()
    defaults: PolicyTable = PolicyTable()
    """The rules of every user, unless their groups or their own table say otherwise."""
    providers: dict[str, ProviderTable] = {}
    users: dict[UserName, UserTable] = {}
    """Accepted for compatibility; users belong in the users file (`proxy.users_file`)."""
    groups: dict[str, GroupTable] = {}
    prices: dict[str, PriceTable] = {}
    state: StateTable = StateTable()
    traces: TracesTable = TracesTable()
    alerts: AlertsTable = AlertsTable()
    jwt: JwtTable | None = None
    """Bearer JWTs as identities; absent: master keys only."""
    models: dict[Annotated[str, Field(pattern=NAME_PATTERN)], ModelTable] = {}
    """The model catalogue: requests to api.openai.com for these names go to their deployments."""


def is_loopback_host(host: str) -> bool:
    """True for an address only this machine reaches: ``localhost``, 127.0.0.0/8, ``::1``.

    Any other name (it may resolve anywhere) and ``""`` (every interface) are not loopback.
    """
    name = host.strip().strip("[]").lower().removesuffix(".")
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def open_proxy_problem(listen_host: str, proxy: ProxyTable) -> str | None:
    """Why listening on ``listen_host`` with these settings would make an open proxy, or None.

    Off loopback, whoever reaches the port could tunnel anywhere through it, unless every
    CONNECT must prove a master key (`proxy_auth`) or only provider hosts are reachable
    (`other_hosts = "block"`, where every request needs a master key anyway).
    """
    if is_loopback_host(listen_host) or proxy.proxy_auth or proxy.other_hosts == "block":
        return None
    return (
        f"proxy.listen_host = {listen_host!r} is not a loopback address, so anyone who can "
        "reach it could use this proxy to reach any host: set proxy.proxy_auth = true (every "
        'client proves a master key) or proxy.other_hosts = "block" (only provider hosts), '
        'or listen on "127.0.0.1"'
    )


class UsersFile(_Strict):
    """The users file (`lmk_users.toml`): only ``[users.NAME]`` tables. Groups are policy and
    stay in the tracked configuration."""

    users: dict[UserName, UserTable] = {}


def split_host_port(value: str) -> tuple[str, int]:
    """``'host:port'`` (IPv6 in brackets) as ``(host, port)``; ValueError if it is not one."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected 'host:port', e.g. '127.0.0.1:9443'")
    return host.strip("[]"), int(port)


def _format_errors(
    error: ValidationError,
    source: str,
    what: str = "configuration",
    hints: Mapping[str, str] | None = None,
) -> str:
    lines = [f"{source}: invalid {what}"]
    for item in error.errors():
        loc = item["loc"]
        is_key = loc[-1:] == ("[key]",)  # a table's name (a dict key) was refused
        if is_key:
            loc = loc[:-1]
        path = ".".join(str(p) for p in loc)
        # Under [providers], a bare string or a misspelt field may hold a key; under
        # [traces], a misspelt field may hold a collector's credentials.
        secret = (
            any(str(p) in _SECRET_FIELDS for p in loc)
            or (loc[:1] == ("providers",) and (len(loc) <= 2 or item["type"] == "extra_forbidden"))
            or (loc[:1] == ("traces",) and item["type"] == "extra_forbidden")
        )
        whole_table = item["type"] == "extra_forbidden" and isinstance(item.get("input"), dict)
        quiet = secret or whole_table or item["type"] == "missing"
        got = "" if quiet else f"got {item.get('input')!r}, "
        message = (
            item["msg"]
            .replace("Input should be", "expected")
            .replace("String should match pattern", "expected text matching")
            .replace("Value error, ", "")
        )
        if item["type"] == "extra_forbidden":
            message = (hints or {}).get(path, "unknown key (not a documented setting)")
        elif is_key and loc[:1] == ("users",):
            message = f"expected a user name ({USER_NAME_RULE})"
        lines.append(f"  {path}: {got}{message}")
    return "\n".join(lines)


def parse(data: Mapping[str, Any], source: str = "config") -> ConfigFile:
    """Validate parsed TOML; raise ConfigError naming each bad TOML path."""
    try:
        return ConfigFile.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, source)) from None


def parse_users(data: Mapping[str, Any], source: str = DEFAULT_USERS_NAME) -> UsersFile:
    """Validate a parsed users file; raise ConfigError naming each bad TOML path."""
    try:
        return UsersFile.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, source, "users file", _USERS_HINTS)) from None


_USERS_HINTS = {
    name: f"unknown key (only [users.NAME] tables belong here; [{name}] is in "
    f"{DEFAULT_CONFIG_NAME})"
    for name in ConfigFile.model_fields
    if name != "users"
}
