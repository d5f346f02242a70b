"""Loads `lmk_config.toml` and its users file, applies them to mitmproxy, and reloads them
when either file changes.

A reload swaps the whole configuration at once and drops no connection: a revoked key is
refused on its next request. An invalid new file (either of the two) is refused with a logged
error and the running configuration, users included, stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import certifi
from mitmproxy import ctx, exceptions
from mitmproxy.addonmanager import Loader

from llamakey import ca, config
from llamakey.state import GatewayState

log = logging.getLogger(__name__)
RELOAD_POLL_SECONDS = 1.0


type FileStamp = tuple[int, int, int, int] | None
"""What tells a file changed: inode, mtime, ctime, size (None: no file)."""


def _file_stamp(path: Path) -> FileStamp:
    try:
        stat = path.stat()
    except OSError:
        return None
    # The inode too: `lmk keys` replaces the file (a rename), and a key rotated within one
    # clock tick leaves a file of the same size and times.
    return stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size


def _upstream_bundle(settings: config.Settings) -> str:
    """The CA file mitmproxy verifies providers against: certifi plus any `upstream_ca`.

    mitmproxy's `ssl_verify_upstream_trusted_ca` replaces its default roots (certifi), so an
    extra CA must come with them. Returns "" when no provider asks for an extra CA.
    """
    extras = sorted({p.upstream_ca for p in settings.providers.values() if p.upstream_ca})
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


def prepare(settings: config.Settings) -> dict[str, object]:
    """Blocking work for a (re)load: make sure the CA exists and fits; return mitmproxy options."""
    hosts = settings.index.host_patterns()
    ca.init_ca(settings.certs_dir, hosts)
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


class ConfigLoader:
    """Owns the `lmk_config` option and keeps `GatewayState.settings` in step with the file."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        # The two files as last read (the config, then the users file it names).
        self._stamp: tuple[FileStamp, FileStamp] | None = None
        self._users_path: Path | None = None
        self._watcher: asyncio.Task[None] | None = None

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
        self._stamp, self._users_path = stamp, settings.users_path
        self._apply(settings, options)

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
            with contextlib.suppress(Exception):
                await self.reload_if_changed()

    async def reload_if_changed(self) -> bool:
        """Reload when the config or the users file changed (inode, times or size); True if a
        new configuration took effect."""
        path = Path(ctx.options.lmk_config).expanduser()
        stamp = await asyncio.to_thread(_stamps, path, self._users_path)
        if stamp[0] is None or stamp == self._stamp:
            return False
        self._stamp = stamp  # a file refused is not read again until it changes again
        try:
            stamp, settings = await asyncio.to_thread(_load, path)
            options = await asyncio.to_thread(prepare, settings)
        except (config.ConfigError, ca.CAError) as error:
            log.error("Configuration not reloaded, the running one stays. %s", error)
            return False
        self._stamp, self._users_path = stamp, settings.users_path
        self._apply(settings, options)
        log.info(
            "Configuration reloaded from %s and %s (%d users)",
            path,
            settings.users_path,
            len(settings.users_by_hash),
        )
        return True


def _stamps(config_path: Path, users_path: Path | None) -> tuple[FileStamp, FileStamp]:
    return _file_stamp(config_path), _file_stamp(users_path) if users_path else None


def _load(path: Path) -> tuple[tuple[FileStamp, FileStamp], config.Settings]:
    """Blocking: the settings, and the stamps of both files, each taken before the file is
    read (a change made while loading is seen at the next poll)."""
    config_stamp = _file_stamp(path)
    file = config.read_config(path)
    users_stamp = _file_stamp(config.users_path_of(file, path))
    return (config_stamp, users_stamp), config.load_users(file, path)
