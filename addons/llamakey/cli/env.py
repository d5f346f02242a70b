"""`lmk env`: a client's environment (proxy, CA bundle, SDK keys), printed and written."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from llamakey import ca, config, credentials
from llamakey.cli.common import ENV_FILE, Subparsers, load_settings
from llamakey.providers import BUILTIN_PROVIDERS


def client_environment(
    settings: config.Settings, user: str, key: str, proxy_host: str
) -> dict[str, str]:
    """The variables a client needs: proxy, CA bundle, and every SDK's key set to the master key."""
    proxy = settings.file.proxy
    credentials_part = f"{user}:{key}@" if proxy.proxy_auth else ""
    url = f"http://{credentials_part}{proxy_host}:{proxy.listen_port}"
    bundle = str(settings.certs_dir / ca.BUNDLE_FILE)
    env = {"HTTPS_PROXY": url, "https_proxy": url}
    for name in (
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "AWS_CA_BUNDLE",
        "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
    ):
        env[name] = bundle
    env["NODE_EXTRA_CA_CERTS"] = str(settings.certs_dir / ca.CA_CERT_FILE)  # Node appends
    env["NODE_USE_ENV_PROXY"] = "1"
    for provider in BUILTIN_PROVIDERS.values():
        for var in provider.key_env:
            env[var] = provider.key_env_prefix + key  # hf_ for Hugging Face's router
    return env


def cmd_env(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    key = args.key or os.environ.get("LMK_MASTER_KEY", "")
    if not key:
        raise SystemExit(
            "lmk: give the master key: lmk env NAME --key lmk_... (or $LMK_MASTER_KEY)"
        )
    key = credentials.normalise(key)
    user = settings.users_by_hash.get(credentials.key_sha256(key))
    if user is None or user.name != args.name:
        raise SystemExit(f"lmk: that is not the master key of {args.name!r} in {settings.path}")
    if not (settings.certs_dir / ca.BUNDLE_FILE).exists():
        ca.init_ca(settings.certs_dir, settings.index.host_patterns())
    listen = settings.file.proxy.listen_host
    host = args.proxy_host or ("127.0.0.1" if listen in ("0.0.0.0", "::", "") else listen)
    env = client_environment(settings, args.name, key, host)
    lines = [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    out = Path(args.output)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the master key
    os.fchmod(fd, 0o600)  # O_CREAT's mode applies only to a new file
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"# also written to {out} (mode 0600)", file=sys.stderr)
    return 0


def add_parser(subparsers: Subparsers) -> None:
    env = subparsers.add_parser("env", help=f"print a client's environment and write {ENV_FILE}")
    env.add_argument("name")
    env.add_argument("--key", help="the user's master key (default: $LMK_MASTER_KEY)")
    env.add_argument("--proxy-host", help="host name clients reach the proxy by")
    env.add_argument("--output", default=ENV_FILE, help=f"file to write (default: {ENV_FILE})")
    env.set_defaults(func=cmd_env)
