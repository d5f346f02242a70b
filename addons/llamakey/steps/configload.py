"""Loads `lmk_config.toml` and its users file, applies them to mitmproxy, and reloads them
when either file changes (or `[jwt] public_key_file`: a key replaced after a leak takes effect).

A reload swaps the whole configuration at once and drops no connection: a revoked key is
refused on its next request. An invalid new file (either of the two) is refused with a logged
error and the running configuration, users included, stays; a valid one is followed by a line
saying what changed.

The same loop watches the CA: mitmproxy keeps the CA it loaded at start in memory, so when the
files change or disappear under it, clients set up from the files fail (and after a restart, a
new CA would fail every client). That is logged as an error within a poll or two.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import certifi
from cryptography.hazmat.primitives import serialization
from mitmproxy import ctx, exceptions
from mitmproxy.addonmanager import Loader
from pydantic import BaseModel

from llamakey import advice, ca, config
from llamakey.files import FileStamp, file_stamp
from llamakey.state import GatewayState

log = logging.getLogger(__name__)
RELOAD_POLL_SECONDS = 1.0


def _upstream_bundle(settings: config.Settings) -> str:
    """The CA file mitmproxy verifies providers against: certifi plus any `upstream_ca`.

    mitmproxy's `ssl_verify_upstream_trusted_ca` replaces its default roots (certifi), so an
    extra CA must come with them. Returns "" when no provider asks for an extra CA.
    """
    extras = settings.upstream_cas
    if not extras:
        return ""
    parts = [Path(certifi.where()).read_bytes()]
    for path in extras:
        try:
            parts.append(path.read_bytes())
        except OSError as error:
            raise config.ConfigError(f"upstream_ca {path}: cannot read: {error.strerror}") from None
    bundle = settings.certs_dir / "upstream-bundle.pem"
    bundle.write_bytes(b"\n".join(parts))
    return str(bundle)


def prepare(settings: config.Settings, *, create_ca: bool = True) -> dict[str, object]:
    """Blocking work for a (re)load: make sure the CA exists and fits; return mitmproxy options.

    Without `create_ca` (a reload, same certs directory) a missing CA is not replaced: mitmproxy
    keeps signing with the one it loaded, and a new one in the files would fail every client
    given it. The CA watch reports the missing files instead, and the rest of the new
    configuration still takes effect.
    """
    hosts = settings.index.host_patterns()
    if create_ca:
        ca.init_ca(settings.certs_dir, hosts)
        _check_constraints(settings, hosts)
    elif (settings.certs_dir / ca.CA_KEY_FILE).exists():
        try:  # rewrites the public files and the bundle from the CA, mending them
            ca.init_ca(settings.certs_dir, hosts)
            _check_constraints(settings, hosts)
        except ca.CAError:
            pass  # a broken CA does not hold up the configuration: the CA watch says it
    return _options(settings)


def _check_constraints(settings: config.Settings, hosts: list[str]) -> None:
    if not ca.is_name_constrained(settings.certs_dir):
        log.warning(
            "The CA in %s has no name constraints: whoever steals its key can impersonate any "
            "site to clients that trust it. %s",
            settings.certs_dir,
            ca.reissue_hint(settings.certs_dir),
        )
    elif uncovered := ca.uncovered_hosts(settings.certs_dir, hosts):
        log.warning(
            "The CA in %s does not permit %s, so clients will refuse those hosts. %s",
            settings.certs_dir,
            ", ".join(uncovered),
            ca.reissue_hint(settings.certs_dir),
        )


def _options(settings: config.Settings) -> dict[str, object]:
    limits = settings.file.limits
    return {
        "confdir": str(settings.certs_dir),
        "allow_hosts": [settings.index.allow_hosts_regex()],
        "ssl_verify_upstream_trusted_ca": _upstream_bundle(settings) or None,
        "onboarding": False,  # clients get our CA from `lmk env`, not from mitm.it
        # Dial a provider only once a request has passed our checks: an unauthenticated
        # client never makes the proxy open a connection upstream.
        "connection_strategy": "lazy",
        # Memory and time bounds (our own 413 for requests comes first, in identify).
        "body_size_limit": f"{int(max(limits.max_request_mb, limits.max_response_mb) * 2**20)}",
        "tcp_timeout": limits.idle_timeout_seconds,
        # Copying the real certificate's names into ours could add a name outside the CA's
        # constraints (a wildcard, say), and clients would then refuse the whole certificate.
        "upstream_cert": False,
    }


def _shown(path: tuple[str, ...]) -> str:
    """A TOML path as the file spells it: a name holding a dot is quoted (prices."gpt-4.1")."""
    return ".".join(f'"{part}"' if "." in part or not part else part for part in path)


def _other_settings(old: config.ConfigFile, new: config.ConfigFile) -> list[str]:
    """The settings that differ, at the depth people edit them: proxy.listen_port, a table
    added or removed (groups.ops, prices."gpt-4.1", providers.groq), a provider's setting
    (providers.openai.connect_to). Users and provider keys are said apart; no value is named."""
    changed: list[tuple[str, ...]] = []
    for section in type(old).model_fields:
        if section == "users":
            continue
        before, after = getattr(old, section), getattr(new, section)
        if before is None or after is None:  # an optional table ([jwt]) added or removed
            if before != after:
                changed.append((section,))
            continue
        if isinstance(before, BaseModel):  # [proxy], [audit], [limits], [jwt]
            changed += [
                (section, name)
                for name in type(before).model_fields
                if getattr(before, name) != getattr(after, name)
            ]
            continue
        for name in before.keys() | after.keys():  # [providers.X], [groups.X], [prices.X]
            if name not in before or name not in after:
                changed.append((section, name))
            elif section == "providers":
                changed += [
                    (section, name, field)
                    for field in type(before[name]).model_fields
                    if field != "keys"
                    and getattr(before[name], field) != getattr(after[name], field)
                ]
            elif before[name] != after[name]:
                changed.append((section, name))
    return sorted(_shown(path) for path in changed)


def describe_changes(old: config.Settings, new: config.Settings) -> str:
    """What a reload changed, in one line: users added, removed or changed; providers that
    gained or lost their real keys (or whose keys changed); every other setting by its TOML
    path. Names only: never a key, a key's hash or any other value."""
    parts: list[str] = []
    before = dict(old.users)
    after = dict(new.users)
    for what, names in (
        ("users added", after.keys() - before.keys()),
        ("users removed", before.keys() - after.keys()),
        ("users changed", {n for n in before.keys() & after.keys() if before[n] != after[n]}),
    ):
        if names:
            parts.append(f"{what}: {', '.join(sorted(names))}")
    keyed_before = {n: p.keyring.keys for n, p in old.providers.items() if p.keyring}
    keyed_after = {n: p.keyring.keys for n, p in new.providers.items() if p.keyring}
    rotated = {
        n for n in keyed_before.keys() & keyed_after.keys() if keyed_before[n] != keyed_after[n]
    }
    for what, names in (
        ("providers with keys gained", keyed_after.keys() - keyed_before.keys()),
        ("providers with keys lost", keyed_before.keys() - keyed_after.keys()),
        ("providers whose keys changed", rotated),
    ):
        if names:
            parts.append(f"{what}: {', '.join(sorted(names))}")
    if others := _other_settings(old.file, new.file):
        parts.append(f"other settings changed: {', '.join(others)}")
    if _pem(old) and _pem(new) and _pem(old) != _pem(new):
        parts.append("jwt.public_key_file: a new key")
    return "; ".join(parts) or "no change in effect"


def _pem(settings: config.Settings) -> bytes | None:
    key = settings.jwt_public_key
    if key is None:
        return None
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


_CA_FILES = (ca.CA_KEY_FILE, ca.CA_CERT_FILE, ca.BUNDLE_FILE)
type _Stamp = tuple[int, int, int] | None


def _ca_stamps(certs_dir: Path) -> tuple[_Stamp, ...]:
    """(inode, mtime, size) of each CA file, None for a missing one: a cheap test for change
    (the files are replaced by rename, so a new file is a new inode)."""
    stamps: list[_Stamp] = []
    for name in _CA_FILES:
        try:
            stat = (certs_dir / name).stat()
        except OSError:
            stamps.append(None)
        else:
            stamps.append((stat.st_ino, stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)


def ca_changes(certs_dir: Path, loaded: str | None) -> list[str]:
    """What is wrong with the CA files under a proxy that loaded the CA with SHA-256
    fingerprint `loaded`, one sentence each naming the fix; [] when they are in order."""
    problems = ca.ca_problems(certs_dir)
    now = ca.ca_fingerprint(certs_dir)
    if loaded is not None and now is not None and now != loaded:
        problems.insert(
            0,
            f"{certs_dir / ca.CA_KEY_FILE} now holds another CA than the one this proxy loaded "
            f"at start (SHA-256 {loaded[:16]}...), which it keeps signing with: clients given "
            "the new CA refuse its certificates now, clients with the old one after a restart. "
            "Restore the old files; or keep the new CA, restart the proxy and redistribute "
            f"{certs_dir / ca.CA_CERT_FILE} to every client",
        )
    return problems


class ConfigLoader:
    """Owns the `lmk_config` option and keeps `GatewayState.settings` in step with the file."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        # The files as last read: the config, then those it names (`_watched`).
        self._stamp: tuple[FileStamp, ...] | None = None
        self._watched: tuple[Path, ...] = ()
        self._watcher: asyncio.Task[None] | None = None
        # The CA mitmproxy loaded (its directory and fingerprint), and what was last seen of it.
        self._ca_dir: Path | None = None
        self._ca_loaded: str | None = None
        self._ca_stamps: tuple[_Stamp, ...] = ()
        self._ca_reported: tuple[str, ...] = ()

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "lmk_config",
            str,
            str(config.default_path()),
            "Path of the LlaMaKey configuration (lmk_config.toml). Reloaded when it changes.",
        )

    def configure(self, updated: set[str]) -> None:
        if "lmk_config" not in updated:
            return
        path = Path(ctx.options.lmk_config).expanduser()
        try:
            stamp, settings = _load(path)
            options = prepare(settings)
        except (config.ConfigError, ca.CAError) as error:
            raise exceptions.OptionsError(str(error)) from None
        self._stamp, self._watched = stamp, _watched(settings.file, path)
        self._apply(settings, options)
        self._ca_in_use(settings.certs_dir)
        for warning in advice.warnings(settings):
            log.warning(warning)

    def _ca_in_use(self, certs_dir: Path) -> None:
        """Note the CA that mitmproxy loads from `certs_dir` (confdir), to watch its files."""
        self._ca_dir = certs_dir
        self._ca_loaded = ca.ca_fingerprint(certs_dir)
        self._ca_stamps = _ca_stamps(certs_dir)
        self._ca_reported = ()

    def _apply(self, settings: config.Settings, options: dict[str, object]) -> None:
        self.state.install(settings)
        known = set(ctx.options.keys())  # a lean master may not load e.g. the onboarding addon
        changed = {k: v for k, v in options.items() if k in known and getattr(ctx.options, k) != v}
        if changed:
            ctx.options.update(**changed)

    def running(self) -> None:
        if ctx.options.deferred:
            log.error("Unknown options (misspelt?): %s", ", ".join(sorted(ctx.options.deferred)))
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    def done(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_POLL_SECONDS)
            for look in (self.reload_if_changed, self.check_ca):
                try:
                    await look()
                except Exception as error:  # the watch goes on; the next poll tries again
                    log.error("Watching %s failed: %r", ctx.options.lmk_config, error)

    async def check_ca(self) -> list[str]:
        """Look at the CA files (a stat each, off the event loop); when they changed, log an
        error saying what is wrong and how to fix it, once per new state, and that they are in
        order again once they are. Returns the problems now known."""
        certs_dir = self._ca_dir
        if certs_dir is None:
            return []
        stamps = await asyncio.to_thread(_ca_stamps, certs_dir)
        if stamps == self._ca_stamps:
            return list(self._ca_reported)
        self._ca_stamps = stamps
        problems = await asyncio.to_thread(ca_changes, certs_dir, self._ca_loaded)
        if problems and tuple(problems) != self._ca_reported:
            log.error(
                "The CA files in %s changed under the running proxy, and clients will fail: %s. "
                "(The proxy signs with the CA it loaded at start until it restarts.)",
                certs_dir,
                "; ".join(p.rstrip(".") for p in problems),
            )
        elif not problems and self._ca_reported:
            log.info("The CA files in %s are in order again.", certs_dir)
        self._ca_reported = tuple(problems)
        return problems

    async def reload_if_changed(self) -> bool:
        """Reload when the config or the users file changed (inode, times or size); True if a
        new configuration took effect."""
        path = Path(ctx.options.lmk_config).expanduser()
        stamp = await asyncio.to_thread(_stamps, path, self._watched)
        if stamp[0] is None or stamp == self._stamp:
            return False
        self._stamp = stamp  # a file refused is not read again until it changes again
        old = self.state.settings
        try:
            stamp, settings, options, changes = await asyncio.to_thread(
                self._reload_work, path, old
            )
        except (config.ConfigError, ca.CAError) as error:
            log.error("Configuration not reloaded, the running one stays. %s", error)
            return False
        self._stamp, self._watched = stamp, _watched(settings.file, path)
        self._apply(settings, options)
        if old is None or settings.certs_dir != old.certs_dir:
            self._ca_in_use(settings.certs_dir)  # mitmproxy loads the CA of the new confdir
        log.info("Configuration reloaded from %s: %s", path, changes)
        for warning in advice.warnings(settings):
            log.warning(warning)
        return True

    @staticmethod
    def _reload_work(
        path: Path, old: config.Settings | None
    ) -> tuple[tuple[FileStamp, ...], config.Settings, dict[str, object], str]:
        """The blocking part of a reload, in a worker thread: read, prepare, compare."""
        stamp, settings = _load(path)
        same_ca = old is not None and settings.certs_dir == old.certs_dir
        options = prepare(settings, create_ca=not same_ca)
        changes = describe_changes(old, settings) if old is not None else "first load"
        return stamp, settings, options, changes


def _watched(file: config.ConfigFile, path: Path) -> tuple[Path, ...]:
    """The files the config at `path` names and is read with: its users file, and the
    identity provider's key of `[jwt] public_key_file`."""
    jwt = file.jwt
    key = (path.parent / jwt.public_key_file,) if jwt and jwt.public_key_file else ()
    return (config.users_path_of(file, path), *key)


def _stamps(config_path: Path, watched: tuple[Path, ...]) -> tuple[FileStamp, ...]:
    return (file_stamp(config_path), *(file_stamp(p) for p in watched))


def _load(path: Path) -> tuple[tuple[FileStamp, ...], config.Settings]:
    """Blocking: the settings, and the stamps of every file, each taken before the file is
    read (a change made while loading is seen at the next poll)."""
    config_stamp = file_stamp(path)
    file = config.read_config(path)
    stamps = tuple(file_stamp(p) for p in _watched(file, path))
    return (config_stamp, *stamps), config.load_users(file, path)
