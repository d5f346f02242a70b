"""`lmk status [NAME]`: a user's effective policy, what their rate limits and budgets have
counted in the current windows, and what remains.

Where the counts come from (`measure`): with ``[state] backend = "sqlite"`` or ``"redis"``
the counters are shared, and are read from the store itself (read-only: a SQLite file is
opened ``mode=ro`` and never created; nothing is ever added). With ``"local"`` they live in
the proxy's memory, so they are worked out from the audit database instead
(`rules.usage_now.window_usage` over `audit.spent_since`), as the proxy counted them.

The JSON (`--format json`) is one object: ``as_of``, ``usage`` (where the counts came from)
and ``users``, a list of `user_status` objects (one with NAME, every user without); README
"Rules" documents each key. No key hash is ever printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llamakey import config
from llamakey.cli.common import (
    Subparsers,
    fail,
    load_settings,
    text_table,
    usage_error,
)
from llamakey.rules.budgets import Budget
from llamakey.rules.limits import RateLimit
from llamakey.rules.policy import UserPolicy
from llamakey.rules.usage_now import (
    Counter,
    counter_of,
    counters_of,
    earliest_start,
    limit_window,
    sharing,
    window_usage,
)
from llamakey.store import StoreUnavailable, Window, open_store


@dataclass(frozen=True, slots=True)
class Measured:
    """The counters' totals in their current windows, and where they came from."""

    source: str
    """``store`` (read from the shared store), ``audit`` (worked out from the audit database)
    or ``none`` (not known: the local store and auditing off)."""
    backend: str
    """``[state] backend``."""
    where: str | None
    """The file read (the SQLite store, the audit database); None for Redis and ``none``."""
    totals: Mapping[Counter, float] | None
    """None when not known; a counter left out holds nothing."""


def utc_text(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _windows(policies: Sequence[UserPolicy]) -> dict[Counter, Window]:
    found: dict[Counter, Window] = {}
    for policy in policies:
        found |= counters_of(policy)
    return found


def measure(settings: config.Settings, shown: Sequence[UserPolicy], now: float) -> Measured:
    """The totals of every counter of the `shown` policies (module docstring)."""
    state = settings.file.state
    windows = _windows(shown)
    if state.backend != "local":
        base = settings.path.parent if settings.path else Path.cwd()
        store = open_store(state, base, readonly=True)
        where = str((base / state.path).resolve()) if state.backend == "sqlite" else None

        async def read() -> dict[Counter, float]:
            try:
                return {c: await store.total(c[0], w) for c, w in windows.items()}
            finally:
                await store.aclose()

        try:
            totals = asyncio.run(read())
        except StoreUnavailable as error:
            fail(f"cannot read the counters of [state] backend = {state.backend!r}: {error}")
        return Measured("store", state.backend, where, totals)
    path = settings.audit_path
    if not settings.file.audit.enabled:
        return Measured("none", "local", None, None)
    since = earliest_start(windows.values(), now)
    if since is None or not path.exists():
        return Measured("audit", "local", str(path), {})  # no rule, or nothing audited yet
    from llamakey import audit as auditdb  # the audit store: only for the commands that read it
    from llamakey.pricing import reserved_cost  # genai-prices: only when worked out here

    users = sharing(settings.policies, windows)
    try:
        spent = auditdb.spent_since(path, datetime.fromtimestamp(since, UTC), users)
    except (sqlite3.Error, OSError) as error:
        fail(
            f"cannot read the audit database {path}: {error} (check audit.path in {settings.path})"
        )
    totals = window_usage(
        spent, settings.policies, now, worst_cost=reserved_cost(settings), wanted=windows
    )
    return Measured("audit", "local", str(path), totals)


def _lists(settings: config.Settings, policy: UserPolicy) -> dict[str, dict[str, Any]]:
    """Per provider of the configuration: its endpoint and model allow-lists (None: not
    restricted) and the TOML paths they came from."""
    result: dict[str, dict[str, Any]] = {}
    for provider in sorted(settings.providers):
        endpoints = policy.endpoints.get(provider)
        models = policy.models.get(provider)
        lists = {
            "endpoints": None if endpoints is None else [p.text for p in endpoints.patterns],
            "models": None if models is None else list(models.patterns),
        }
        entry: dict[str, Any] = {}
        for kind, allowed in lists.items():
            tables = policy.sources.get(f"{kind}.{provider}", "")
            sources = [f"{table}.{kind}.{provider}" for table in tables.split(", ") if table]
            entry[kind] = None if allowed is None else {"allowed": allowed, "sources": sources}
        result[provider] = entry
    return result


def _count(value: float) -> int | float:
    """Requests and tokens as integers (what they are but for a fraction of a reservation)."""
    value = round(value, 6)
    return int(value) if value.is_integer() else value


def _rule(rule: RateLimit | Budget, measured: Measured, now: float) -> dict[str, Any]:
    window = limit_window(rule) if isinstance(rule, RateLimit) else rule.window
    totals = measured.totals
    used = None if totals is None else totals.get(counter_of(rule), 0.0)
    common: dict[str, Any] = {
        "source": rule.source,
        "per": rule.per,
        "scope": rule.scope,
        "counter": rule.scope_id,
        "provider": rule.provider,
        "model": rule.model.patterns[0] if rule.model is not None else None,
    }
    if isinstance(rule, RateLimit):
        return {
            **common,
            "unit": rule.unit,
            "limit": rule.limit,
            "used": None if used is None else _count(used),
            "remaining": None if used is None else _count(max(0.0, rule.limit - used)),
            "resets_at": utc_text(window.end(now)),
        }
    return {
        **common,
        "usd": rule.usd,
        "used_usd": None if used is None else round(used, 6),
        "remaining_usd": None if used is None else round(max(0.0, rule.usd - used), 6),
        "resets_at": utc_text(window.end(now)),
    }


def user_status(
    user: config.User, settings: config.Settings, measured: Measured, now: float
) -> dict[str, Any]:
    """One user's status, as ``--format json`` prints it (README "Rules": `lmk status`)."""
    policy = settings.policies.get(user.name, UserPolicy())
    return {
        "user": user.name,
        "groups": list(user.groups),
        "status": user.refusal(datetime.fromtimestamp(now, UTC)) or "active",
        "expires": None if user.expires is None else utc_text(user.expires.timestamp()),
        "providers": _lists(settings, policy),
        "rate_limits": [_rule(limit, measured, now) for limit in policy.rate_limits],
        "budgets": [_rule(budget, measured, now) for budget in policy.budgets],
    }


def _number(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _counted(rule: dict[str, Any]) -> str:
    """Whose counter a rule counts on, and what it counts: ``for alice``, ``for group
    research, on openai, model gpt-4o*``."""
    scope, counter = rule["scope"], rule["counter"]
    words = {"user": f"for {counter}", "group": f"for group {counter}"}
    text = words.get(scope, "for the whole gateway")
    if rule["provider"] is not None:
        text += f", on {rule['provider']}"
    if rule["model"] is not None:
        text += f", model {rule['model']}"
    return text


def _rule_line(rule: dict[str, Any]) -> str:
    if "usd" in rule:
        what = f"${rule['usd']:.2f} per {rule['per']}"
        used, left = rule["used_usd"], rule["remaining_usd"]
        amounts = "used unknown" if used is None else f"used ${used:.6f}, remaining ${left:.6f}"
    else:
        what = f"{rule['limit']} {rule['unit']} per {rule['per']}"
        used, left = rule["used"], rule["remaining"]
        amounts = (
            "used unknown" if used is None else f"used {_number(used)}, remaining {_number(left)}"
        )
    return f"{what} ({rule['source']}) {_counted(rule)}: {amounts}, resets {rule['resets_at']}"


def _source_line(measured: Measured) -> str:
    if measured.source == "store":
        where = f" {measured.where}" if measured.where else ""
        return f"the {measured.backend} store{where} ([state] backend = {measured.backend!r})"
    if measured.source == "audit":
        return (
            f"the audit database {measured.where} ([state] backend = 'local': the proxy's "
            "counters are in its memory; these are its admitted requests, counted again)"
        )
    return (
        "nowhere: [state] backend = 'local' keeps the counters in the proxy's memory, and "
        "auditing is off (audit.enabled = false)"
    )


def format_user(status: dict[str, Any]) -> str:
    """One user's status as text (``lmk status NAME``)."""
    expires = "never" if status["expires"] is None else status["expires"]
    groups = ", ".join(status["groups"]) or "none"
    lines = [f"{status['user']}: {status['status']} (groups: {groups}; expires: {expires})"]
    lines.append("allowed:")
    unrestricted: list[str] = []
    rows: list[tuple[str, ...]] = []
    for provider, lists in status["providers"].items():
        if lists["endpoints"] is None and lists["models"] is None:
            unrestricted.append(provider)
            continue
        for kind in ("endpoints", "models"):
            found = lists[kind]
            if found is None:
                allowed, source = "any", ""
            else:
                allowed = ", ".join(found["allowed"]) or "none"
                source = f"({', '.join(found['sources'])})"
            rows.append(("  " + provider if kind == "endpoints" else "", kind, allowed, source))
    lines.extend(text_table(rows).splitlines() if rows else [])
    if unrestricted:
        everything = "  any endpoint and model: " if rows else "  any endpoint and model of "
        lines.append(everything + ("every other provider" if rows else "every provider"))
    for heading, key in (("rate limits", "rate_limits"), ("budgets", "budgets")):
        rules = status[key]
        lines.append(f"{heading}:" + ("" if rules else " none"))
        lines.extend(f"  {_rule_line(rule)}" for rule in rules)
    return "\n".join(lines) + "\n"


def _fullest(status: dict[str, Any]) -> str:
    """The rule closest to its limit, as ``2/3 requests per minute (defaults.rate_limits.0)``."""
    best: tuple[float, str] | None = None
    for rule in status["rate_limits"] + status["budgets"]:
        if "usd" in rule:
            used, limit = rule["used_usd"], rule["usd"]
            amounts = f"${used or 0:.2f}/${limit:.2f}"
        else:
            used, limit = rule["used"], rule["limit"]
            amounts = f"{_number(used or 0)}/{limit} {rule['unit']}"
        if used is None:
            return "unknown"
        if best is None or used / limit > best[0]:
            best = (used / limit, f"{amounts} per {rule['per']} ({rule['source']})")
    return "-" if best is None else best[1]


def format_summary(statuses: Sequence[dict[str, Any]]) -> str:
    """Every user on one line each (``lmk status``): the rule nearest its limit."""
    rows = [("NAME", "GROUPS", "STATUS", "EXPIRES", "LIMITS", "BUDGETS", "FULLEST")]
    for status in statuses:
        rows.append(
            (
                status["user"],
                ",".join(status["groups"]) or "-",
                status["status"],
                status["expires"] or "-",
                str(len(status["rate_limits"])),
                str(len(status["budgets"])),
                _fullest(status),
            )
        )
    return text_table(rows)


def cmd_status(args: argparse.Namespace) -> int:
    if args.name is not None and not config.is_user_name(args.name):
        usage_error(f"{args.name!r} is not a user name: expected {config.USER_NAME_RULE}")
    settings = load_settings(args.config)
    now = time.time()
    users = sorted(settings.users.values(), key=lambda u: u.name)  # JWT-only users too
    if args.name is not None:
        users = [u for u in users if u.name == args.name]
        if not users:
            fail(f"no user {args.name!r} in {settings.users_path} (`lmk keys list` lists them)")
    shown = [settings.policies.get(u.name, UserPolicy()) for u in users]
    measured = measure(settings, shown, now)
    statuses = [user_status(user, settings, measured, now) for user in users]
    if args.format == "json":
        usage = {"source": measured.source, "backend": measured.backend, "where": measured.where}
        print(
            json.dumps(
                {"as_of": utc_text(now), "usage": usage, "users": statuses},
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    print(f"as of {utc_text(now)}; usage from {_source_line(measured)}\n")
    if args.name is not None:
        print(format_user(statuses[0]), end="")
    else:
        print(format_summary(statuses), end="")
    return 0


def add_parser(subparsers: Subparsers) -> None:
    status = subparsers.add_parser(
        "status",
        help="a user's policy, their rate limits and budgets: used, remaining, resets",
    )
    status.add_argument("name", nargs="?", help="one user (default: every user, a line each)")
    status.add_argument("--format", default="text", choices=["text", "json"])
    status.set_defaults(func=cmd_status)
