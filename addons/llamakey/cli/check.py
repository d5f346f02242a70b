"""`lmk check`: validate the configuration and summarise it."""

from __future__ import annotations

import argparse

from llamakey import ca
from llamakey.cli.common import Subparsers, load_settings


def cmd_check(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
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
    users = settings.users_by_hash.values()
    active = sum(1 for u in users if not u.disabled)
    print(
        f"users: {len(users)} ({active} active; users file {settings.users_path}); "
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


def add_parser(subparsers: Subparsers) -> None:
    subparsers.add_parser("check", help="validate the configuration and summarise it").set_defaults(
        func=cmd_check
    )
