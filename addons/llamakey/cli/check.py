"""`lmk check`: validate the configuration and summarise it."""

from __future__ import annotations

import argparse

from llamakey import advice, ca, config
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
    for model in settings.models.models.values():
        names = ", ".join((model.name, *model.aliases))
        print(f"model {names}:")
        for d in model.deployments:
            held = f"{len(d.keys)} key(s)" if d.keys else f"NO KEY ({d.missing_key})"
            print(f"  {d.name:<12} {d.kind} {d.authority}, weight {d.weight}: {held}")
    users = settings.users.values()
    active = sum(1 for u in users if not u.disabled)
    print(
        f"users: {len(users)} ({active} active; users file {settings.users_path}); "
        f"groups: {', '.join(settings.file.groups) or 'none'}"
    )
    if (jwt := settings.file.jwt) is not None:
        source = jwt.jwks_url or f"{jwt.public_key_file} (PEM)"
        unknown = "refused" if jwt.unknown_identity == "refuse" else f"group {jwt.unknown_identity}"
        print(
            f"jwt: issuer {jwt.issuer}, audience {', '.join(jwt.audience)}, "
            f"{', '.join(jwt.algorithms)} keys from {source}; {len(settings.users_by_subject)} "
            f"user(s) by {jwt.identity_claim}, other identities {unknown}"
        )
    print(f"audit: {settings.audit_path if settings.file.audit.enabled else 'off'}")
    print(f"traces: {_traces(settings)}")
    for warning in advice.warnings(settings):
        print(f"warning: {warning}")
    return _check_ca(settings)


def _check_ca(settings: config.Settings) -> int:
    """Say what state the CA is in; 1 when clients would fail with it."""
    certs = settings.certs_dir
    if problems := ca.ca_problems(certs):
        print(f"CA: {certs} (BROKEN)")
        for problem in problems:
            print(f"  {problem}")
        return 1
    if not (certs / ca.CA_KEY_FILE).exists():
        print(f"CA: not created yet (created in {certs} on first start)")
        return 0
    try:
        uncovered = ca.uncovered_hosts(certs, settings.index.host_patterns())
        constrained = ca.is_name_constrained(certs)
    except ca.CAError as error:  # changed between the two reads
        print(f"CA: {certs} (BROKEN)\n  {error}")
        return 1
    state = "ok" if not uncovered else f"does not cover {', '.join(uncovered)}"
    print(f"CA: {certs} ({state})")
    if not constrained:
        print(
            "warning: the CA has no name constraints: whoever steals its key can impersonate "
            f"any site to clients that trust it. {ca.reissue_hint(certs)}"
        )
    if uncovered:
        print(ca.reissue_hint(certs))
        return 1
    return 0


def add_parser(subparsers: Subparsers) -> None:
    subparsers.add_parser("check", help="validate the configuration and summarise it").set_defaults(
        func=cmd_check
    )


def _traces(settings: config.Settings) -> str:
    """Each destination of `[traces]` with its endpoint (never its headers), or "off"."""
    if settings.traces is None:
        return "off"
    parts = [
        f"{name} {d.endpoint}"
        + (" with bodies" if d.include_bodies else "")
        + (f" (NO SPANS: {d.missing})" if d.missing else "")
        for name, d in sorted(settings.traces.destinations.items())
    ]
    return "; ".join(parts) or "on, but no destination (set traces.endpoint or name one)"
