"""Warnings about a configuration that is valid but unsafe, said the same way by `lmk check`
and by the proxy when it loads the file. A warning names the TOML path, never the value."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from llamakey.config import Settings
from llamakey.providers import BUILTIN_PROVIDERS

# A reference to the environment, as `llamakey.config.load` expands them.
_ENV_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")


def _variable_for(provider: str) -> str:
    builtin = BUILTIN_PROVIDERS.get(provider)
    if builtin is not None and builtin.key_env:
        return builtin.key_env[0]
    return re.sub(r"[^A-Z0-9_]", "_", provider.upper()) + "_API_KEY"


def literal_keys(settings: Settings) -> list[str]:
    """One warning per provider key, or trace destination credential header, written into the
    file itself instead of a ``${VAR}`` reference: whoever reads the file (its backups, its
    history in version control) has it."""
    where = settings.path or "the configuration"
    tables = [
        (f"providers.{name}", _variable_for(name), table.keys)
        for name, table in sorted(settings.file.providers.items())
    ]
    tables += [
        (
            f"models.{name}.deployments.{position}",
            re.sub(r"[^A-Z0-9_]", "_", deployment.name.upper()) + "_API_KEY",
            deployment.keys,
        )
        for name, model in sorted(settings.file.models.items())
        for position, deployment in enumerate(model.deployments)
    ]
    warnings: list[str] = []
    for table_path, variable, keys in tables:
        for position, entry in enumerate(keys):
            if not entry.strip() or _ENV_REF.search(entry):
                continue
            warnings.append(
                f"{table_path}.keys[{position}] in {where} is a literal key, not a "
                "${VAR} reference: whoever can read the file has the key. Put the key in the "
                f"proxy's environment instead ({variable}=...) and write "
                f'keys = ["${{{variable}}}"]'
            )
    traces = settings.file.traces
    headers = [("traces", traces.headers)] + [
        (f"traces.destinations.{name}", d.headers)
        for name, d in sorted(traces.destinations.items())
    ]
    for section, values in headers:
        for header, value in values.items():
            if _CREDENTIAL_HEADER.search(header) and value.strip() and not _ENV_REF.search(value):
                warnings.append(
                    f"{section}.headers.{header} in {where} is a literal credential, not a "
                    "${VAR} reference: whoever can read the file has it. Put it in the proxy's "
                    f'environment and write {header} = "…${{VAR}}"'
                )
    return warnings


# Headers that carry a collector's credentials (Authorization, x-api-key, x-honeycomb-team, …).
_CREDENTIAL_HEADER = re.compile(r"auth|key|token|secret|team|password", re.IGNORECASE)


def literal_alert_secret(settings: Settings) -> list[str]:
    """A warning when ``[alerts] secret`` is written into the file instead of a ``${VAR}``
    reference (the tracked file holds no secret)."""
    secret = settings.file.alerts.secret
    if secret is None or _ENV_REF.search(secret):
        return []
    where = settings.path or "the configuration"
    return [
        f"alerts.secret in {where} is a literal secret, not a ${{VAR}} reference: whoever can "
        "read the file can sign alerts. Put it in the proxy's environment "
        '(LMK_ALERT_SECRET=...) and write secret = "${LMK_ALERT_SECRET}"'
    ]


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_jwks_url(settings: Settings) -> list[str]:
    """A warning when ``[jwt] jwks_url`` is plain http:// to another machine: whoever is on
    the path can answer with a key set of their own and sign a token for anyone with it."""
    jwt = settings.file.jwt
    if jwt is None or jwt.jwks_url is None:
        return []
    url = urlsplit(jwt.jwks_url)
    if url.scheme != "http" or _loopback(url.hostname or ""):
        return []
    where = settings.path or "the configuration"
    return [
        f"jwt.jwks_url in {where} is plain http://: anyone on the network between this proxy "
        "and the identity provider can answer with keys of their own and forge a token for any "
        "identity. Use the provider's https:// URL (jwks_ca for a CA of your own)"
    ]


def warnings(settings: Settings) -> list[str]:
    """Every warning about `settings`, as `lmk check` and the proxy say them."""
    return [*literal_keys(settings), *literal_alert_secret(settings), *plain_jwks_url(settings)]
