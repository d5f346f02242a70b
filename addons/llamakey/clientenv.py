"""A client's environment (proxy, CA bundle, SDK keys), and the onboarding address it is
handed out at.

Both sides use it: `lmk env` (`cli/env.py`) writes it for a client, and the proxy's onboarding
step (`steps/onboard.py`) answers ``GET http://lmk.invalid/env`` with it for a member's machine,
where `lmk env --proxy` checks the answer against it (`cli/env_remote.py`). It sits below both,
so a step never imports the CLI.

The proxy never puts the master key in its answer (a flow is shown by mitmweb, saved by
``-w`` and logged, and every master key in one is masked): it writes `KEY_PLACEHOLDER` where
the key goes, and the member's side puts the key in.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import PurePath
from urllib.parse import quote

from llamakey import ca
from llamakey.providers import BUILTIN_PROVIDERS

__all__ = [
    "BUNDLE_VARIABLES",
    "KEY_PLACEHOLDER",
    "ONBOARD_HOST",
    "ONBOARD_URL",
    "USER_HEADER",
    "client_environment",
    "export_lines",
    "proxy_authority",
]

# The onboarding address: a name under `.invalid`, which RFC 6761 reserves so that it never
# resolves anywhere. Only the proxy answers it (plain HTTP through the proxy, like mitm.it).
ONBOARD_HOST = "lmk.invalid"
ONBOARD_URL = f"http://{ONBOARD_HOST}"
# Where the master key goes in the proxy's answer to GET /env (see the module doc).
KEY_PLACEHOLDER = "@LMK_MASTER_KEY@"
# The answer names whose environment it is.
USER_HEADER = "lmk-user"

# Variables that replace the default roots: they get the bundle (system roots + our CA).
BUNDLE_VARIABLES = (
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "AWS_CA_BUNDLE",
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
)


def proxy_authority(host: str, port: int) -> str:
    """``host:port`` as a URL carries it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def client_environment(
    user: str, key: str, proxy: str, *, proxy_auth: bool, certs_dir: PurePath
) -> dict[str, str]:
    """The variables a client needs: proxy, CA bundle, and every SDK's key set to the master key.

    `proxy` is the ``host:port`` clients dial; `certs_dir` the directory that holds the client
    bundle and our CA certificate on the client's machine (the admin's certs directory for
    `lmk env NAME`, the member's own for `lmk env --proxy`). The proxy's onboarding answer is
    this with `KEY_PLACEHOLDER` for `key`.
    """
    credentials_part = f"{quote(user, safe='')}:{key}@" if proxy_auth else ""
    url = f"http://{credentials_part}{proxy}"
    bundle = str(certs_dir / ca.BUNDLE_FILE)
    env = {"HTTPS_PROXY": url, "https_proxy": url}
    for name in BUNDLE_VARIABLES:
        env[name] = bundle
    env["NODE_EXTRA_CA_CERTS"] = str(certs_dir / ca.CA_CERT_FILE)  # Node appends
    env["NODE_USE_ENV_PROXY"] = "1"
    for provider in BUILTIN_PROVIDERS.values():
        for var in provider.key_env:
            env[var] = provider.key_env_prefix + key  # hf_ for Hugging Face's router
    return env


def export_lines(env: Mapping[str, str]) -> list[str]:
    """The lines a shell sources (or evaluates) to set `env`."""
    return [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
