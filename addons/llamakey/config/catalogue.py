"""The model catalogue (`[models.NAME]`) resolved: each catalogued model with its aliases and
its deployments, each deployment with its target (host, port, path prefix), its real keys and
the provider entry that prices and meters it.

Resolved once per (re)load, like the providers; `llamakey.routing` picks among the
deployments per request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from llamakey.config.schema import ConfigError, DeploymentTable, ModelTable, split_host_port
from llamakey.providers import Carrier, Provider, ProviderIndex

OPENAI_BASE_URL = "https://api.openai.com/v1"

type Keys = tuple[tuple[str, ...], str | None]
"""The keys, and why there are none (naming the setting to fix)."""
type KeysOf = Callable[[str, list[str]], Keys]
"""(TOML path, key references) -> their keys."""


@dataclass(frozen=True, slots=True)
class Deployment:
    """One place a catalogued model is served."""

    name: str
    kind: str  # "openai" | "azure" | "openai_compatible"
    host: str  # the target's host name: its keys go here and nowhere else
    port: int
    prefix: str  # the path the API's paths hang under ("/v1", "/openai/v1", "" for azure)
    model: str  # the model name the target knows
    weight: int
    responses: bool  # serves the Responses API
    keys: tuple[str, ...]
    missing_key: str | None  # why it has no key, naming the setting to fix
    carrier: Carrier  # where its key goes: api-key for Azure, Authorization: Bearer otherwise
    pricing: Provider  # the catalogue entry that meters and prices its answers
    azure_deployment: str | None = None
    api_version: str | None = None
    connect_to: tuple[str, int] | None = None
    upstream_ca: Path | None = None

    @property
    def authority(self) -> str:
        """The Host header the target expects."""
        return self.host if self.port == 443 else f"{self.host}:{self.port}"

    def path_for(self, api: str) -> str | None:
        """The target's path (with query) for `api` (``chat/completions``, ``embeddings``,
        ``responses``), or None when it does not serve that API."""
        if api == "responses" and not self.responses:
            return None
        if self.kind != "azure":
            return f"{self.prefix}/{api}"
        query = f"?api-version={self.api_version}"
        if api == "responses":  # Azure's Responses API names the deployment in the body
            return f"/openai/responses{query}"
        return f"/openai/deployments/{self.azure_deployment}/{api}{query}"

    @property
    def body_model(self) -> str:
        """What the request body's ``model`` becomes (Azure: the deployment's name)."""
        return self.azure_deployment if self.azure_deployment else self.model


@dataclass(frozen=True, slots=True)
class CatalogueModel:
    """A catalogued model: its name, its aliases, its deployments in the order written."""

    name: str
    aliases: tuple[str, ...]
    deployments: tuple[Deployment, ...]
    cooldown_seconds: float


class ModelCatalogue:
    """Name or alias -> catalogued model."""

    def __init__(self, models: Mapping[str, CatalogueModel] | None = None) -> None:
        self.models = dict(models or {})
        self._names: dict[str, CatalogueModel] = {}
        for model in self.models.values():
            for name in (model.name, *model.aliases):
                self._names[name] = model

    def __bool__(self) -> bool:
        return bool(self.models)

    def lookup(self, name: str | None) -> CatalogueModel | None:
        return self._names.get(name) if name else None

    def deployments(self) -> list[Deployment]:
        return [d for m in self.models.values() for d in m.deployments]


def resolve_models(
    tables: Mapping[str, ModelTable],
    index: ProviderIndex,
    base: Path,
    keys_of: KeysOf,
    provider_keys: Mapping[str, Keys],
) -> ModelCatalogue:
    """`[models]` resolved; ConfigError naming the TOML path of a name used twice."""
    models: dict[str, CatalogueModel] = {}
    named: dict[str, str] = {}  # model or alias name -> where it is defined
    deployment_names: dict[str, str] = {}
    for name, table in tables.items():
        for position, alias in enumerate((name, *table.aliases)):
            where = f"models.{name}" if position == 0 else f"models.{name}.aliases.{position - 1}"
            if alias in named:
                raise ConfigError(f"{where}: {alias!r} is already a name of {named[alias]}")
            named[alias] = where
        deployments = []
        for position, entry in enumerate(table.deployments):
            where = f"models.{name}.deployments.{position}"
            if entry.name in deployment_names:
                raise ConfigError(
                    f"{where}.name: {entry.name!r} is already {deployment_names[entry.name]}"
                )
            deployment_names[entry.name] = where
            deployments.append(_deployment(name, entry, where, index, base, keys_of, provider_keys))
        models[name] = CatalogueModel(
            name, tuple(table.aliases), tuple(deployments), table.cooldown_seconds
        )
    return ModelCatalogue(models)


def _deployment(
    model: str,
    entry: DeploymentTable,
    where: str,
    index: ProviderIndex,
    base: Path,
    keys_of: KeysOf,
    provider_keys: Mapping[str, Keys],
) -> Deployment:
    url = urlsplit(entry.endpoint or entry.base_url or OPENAI_BASE_URL)
    host = (url.hostname or "").lower()
    port = url.port or 443
    provider = index.lookup(host)
    if entry.keys:
        keys, missing = keys_of(f"{where}.keys", entry.keys)
    elif provider is not None:
        # No keys of its own: those of the provider whose host it is (they may go there).
        keys, missing = provider_keys[provider.name]
    else:
        raise ConfigError(
            f"{where}.keys: {host} is no provider's host, so the deployment needs keys of its own"
        )
    azure = entry.kind == "azure"
    return Deployment(
        name=entry.name,
        kind=entry.kind,
        host=host,
        port=port,
        prefix="" if azure else url.path.rstrip("/"),
        model=entry.model or model,
        weight=entry.weight,
        responses=entry.responses
        if entry.responses is not None
        else entry.kind != "openai_compatible",
        keys=keys,
        missing_key=missing,
        carrier=Carrier.API_KEY if azure else Carrier.BEARER,
        pricing=provider if provider is not None else Provider(entry.name, ()),
        azure_deployment=entry.deployment,
        api_version=entry.api_version,
        connect_to=split_host_port(entry.connect_to) if entry.connect_to else None,
        upstream_ca=(base / entry.upstream_ca) if entry.upstream_ca else None,
    )
