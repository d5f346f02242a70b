"""`lmk`: run the gateway and manage its keys, CA and client set-up."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
from pathlib import Path

import tomlkit

from llamakey import ca, config, credentials
from llamakey.providers import BUILTIN_PROVIDERS

ENV_FILE = "llamakey_local.env"


def _load(path: Path) -> config.Settings:
    try:
        return config.load(path)
    except config.ConfigError as error:
        raise SystemExit(f"lmk: {error}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    from llamakey import server

    sets = list(args.set or [])
    if args.save:
        sets.append(f"save_stream_file={args.save}")
    try:
        status: int = asyncio.run(server.run(args.config, sets, web=args.command == "web"))
        return status
    except config.ConfigError as error:
        print(f"lmk: {error}", file=sys.stderr)
        return 2


def cmd_check(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    print(f"{settings.path}: valid")
    proxy = settings.file.proxy
    print(
        f"proxy: {proxy.listen_host}:{proxy.listen_port}, other hosts: {proxy.other_hosts}, "
        f"proxy auth: {'required' if proxy.proxy_auth else 'optional'}"
    )
    print("providers:")
    for name in sorted(settings.providers):
        resolved = settings.providers[name]
        keys = len(resolved.keyring.keys) if resolved.keyring else 0
        status = f"{keys} key(s)" if keys else f"NO KEY ({resolved.missing_key})"
        legacy = f" [legacy: {resolved.provider.legacy}]" if resolved.provider.legacy else ""
        via = (
            f" via {resolved.connect_to[0]}:{resolved.connect_to[1]}" if resolved.connect_to else ""
        )
        print(f"  {name:<12} {', '.join(resolved.provider.hosts)}: {status}{via}{legacy}")
    users = settings.file.users
    active = sum(1 for u in settings.users_by_hash.values() if not u.disabled)
    print(
        f"users: {len(users)} ({active} active); "
        f"groups: {', '.join(settings.file.groups) or 'none'}"
    )
    print(f"audit: {settings.audit_path if settings.file.audit.enabled else 'off'}")
    if (settings.certs_dir / ca.CA_KEY_FILE).exists():
        uncovered = ca.uncovered_hosts(settings.certs_dir, settings.index.host_patterns())
        state = "ok" if not uncovered else f"does not cover {', '.join(uncovered)}"
        print(f"CA: {settings.certs_dir} ({state})")
        if uncovered:
            print(ca.reissue_hint(settings.certs_dir))
            return 1
    else:
        print(f"CA: not created yet (created in {settings.certs_dir} on first start)")
    return 0


def _edit(path: Path) -> tomlkit.TOMLDocument:
    if not path.exists():
        raise SystemExit(f"lmk: {path}: no such file")
    return tomlkit.parse(path.read_text(encoding="utf-8"))


def _save(path: Path, doc: tomlkit.TOMLDocument) -> None:
    """Write the edited file only if it is still a valid configuration."""
    text = tomlkit.dumps(doc)
    try:
        config.parse(tomlkit.parse(text).unwrap(), str(path))
    except config.ConfigError as error:
        raise SystemExit(f"lmk: not saved: {error}") from None
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def cmd_keys_new(args: argparse.Namespace) -> int:
    doc = _edit(args.config)
    users = doc.setdefault("users", tomlkit.table(is_super_table=True))
    if args.name in users:
        raise SystemExit(f"lmk: users.{args.name} exists; `lmk keys revoke {args.name}` first")
    groups = doc.setdefault("groups", tomlkit.table(is_super_table=True))
    for group in args.group or []:
        if group not in groups:
            groups[group] = tomlkit.table()
    key = credentials.new_master_key()
    user = tomlkit.table()
    user["key_sha256"] = credentials.key_sha256(key)
    if args.group:
        user["groups"] = list(args.group)
    users[args.name] = user
    _save(args.config, doc)
    print(key)
    print(
        f"# The master key of {args.name!r}, shown once; only its SHA-256 is kept in "
        f"{args.config}.\n# Client set-up: lmk env {args.name} --key {key[:8]}...",
        file=sys.stderr,
    )
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    for user in sorted(settings.users_by_hash.values(), key=lambda u: u.name):
        state = (
            "disabled"
            if user.disabled
            else (f"expires {user.expires:%Y-%m-%d}" if user.expires else "active")
        )
        print(
            f"{user.name:<20} {state:<20} groups: {', '.join(user.groups) or '-'}  "
            f"sha256: {user.key_sha256[:12]}..."
        )
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    doc = _edit(args.config)
    users = doc.get("users", {})
    if args.name not in users:
        raise SystemExit(f"lmk: no user {args.name!r} in {args.config}")
    del users[args.name]
    _save(args.config, doc)
    print(f"revoked {args.name}: a running proxy refuses the key from its next request")
    return 0


def cmd_ca_init(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    cert = ca.init_ca(settings.certs_dir, settings.index.host_patterns(), force=args.force)
    print(f"CA certificate: {cert}\nclient bundle:  {settings.certs_dir / ca.BUNDLE_FILE}")
    return 0


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
    settings = _load(args.config)
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


def cmd_usage(args: argparse.Namespace) -> int:
    from llamakey import audit as auditdb

    settings = _load(args.config)
    if not settings.audit_path.exists():
        raise SystemExit(f"lmk: no audit database at {settings.audit_path} yet")
    since = auditdb.parse_since(args.since) if args.since else None
    report = auditdb.usage_report(settings.audit_path, since=since, by=args.by)
    print(auditdb.format_report(report, args.format))
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from llamakey import audit as auditdb

    settings = _load(args.config)
    result = auditdb.verify(settings.audit_path)
    if result.ok:
        print(
            f"ok: {result.rows_checked} rows chained, {result.unfinished} unfinished"
            f"{f', head {result.head_hash}' if result.head_hash else ''}"
        )
        return 0
    print(
        f"TAMPERED: row {result.first_bad_id} was {result.problem} "
        f"({result.rows_checked} rows checked before it)"
    )
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmk", description=__doc__)
    parser.add_argument(
        "--config",
        type=Path,
        default=config.default_path(),
        help="configuration file (default: $LMK_CONFIG or ./lmk_config.toml)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    for name, text in (
        ("serve", "run the proxy (mitmdump-style)"),
        ("web", "run the proxy with mitmweb's UI on loopback, token-protected"),
    ):
        run = sub.add_parser(name, help=text)
        run.add_argument(
            "--set",
            action="append",
            metavar="OPTION=VALUE",
            help="a mitmproxy option, as with mitmdump --set",
        )
        run.add_argument("-w", "--save", metavar="FILE", help="save flows to FILE (redacted)")
        run.set_defaults(func=cmd_serve)

    sub.add_parser("check", help="validate the configuration and summarise it").set_defaults(
        func=cmd_check
    )

    keys = sub.add_parser("keys", help="master keys").add_subparsers(
        dest="keys_command", required=True
    )
    new = keys.add_parser("new", help="create a user's master key (printed once)")
    new.add_argument("name")
    new.add_argument("--group", action="append", help="add the user to this group (repeatable)")
    new.set_defaults(func=cmd_keys_new)
    keys.add_parser("list", help="list users").set_defaults(func=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="remove a user's key")
    revoke.add_argument("name")
    revoke.set_defaults(func=cmd_keys_revoke)

    ca_parser = sub.add_parser("ca", help="the proxy's CA").add_subparsers(
        dest="ca_command", required=True
    )
    init = ca_parser.add_parser("init", help="create the name-constrained CA and the client bundle")
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    init.set_defaults(func=cmd_ca_init)

    env = sub.add_parser("env", help=f"print a client's environment and write {ENV_FILE}")
    env.add_argument("name")
    env.add_argument("--key", help="the user's master key (default: $LMK_MASTER_KEY)")
    env.add_argument("--proxy-host", help="host name clients reach the proxy by")
    env.add_argument("--output", default=ENV_FILE, help=f"file to write (default: {ENV_FILE})")
    env.set_defaults(func=cmd_env)

    usage = sub.add_parser("usage", help="usage and cost from the audit log")
    usage.add_argument("--since", help="7d, 24h, 30m or an ISO date (default: everything)")
    usage.add_argument(
        "--by", default="user", choices=["user", "group", "provider", "model", "day"]
    )
    usage.add_argument("--format", default="table", choices=["table", "csv", "json"])
    usage.set_defaults(func=cmd_usage)
    audit = sub.add_parser("audit", help="the audit log").add_subparsers(
        dest="audit_command", required=True
    )
    audit.add_parser(
        "verify", help="check the hash chain; name the first altered, inserted or deleted row"
    ).set_defaults(func=cmd_audit_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
