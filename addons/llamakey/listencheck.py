"""For `mitmdump -s addons/entry.py`: refuse to run on another address than the config's.

`lmk serve` listens where `proxy.listen_host/port` say. Plain mitmdump listens where its own
options say (`*:8080` unless `--listen-host`/`-p` are given), and a script cannot move servers
mitmproxy has already bound, so this addon checks, once the proxy listens, that it listens
exactly where the configuration says (loopback by default: only this machine) and otherwise
stops it, saying which flags to give.
"""

from __future__ import annotations

import logging

from mitmproxy import ctx

from llamakey.state import GatewayState

log = logging.getLogger(__name__)
_ANY = ("", "0.0.0.0", "::")


class ListenCheck:
    """Stops a plain mitmdump that listens elsewhere than `proxy.listen_host/port`."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def running(self) -> None:
        settings = self.state.settings
        proxyserver = ctx.master.addons.get("proxyserver")
        if settings is None or proxyserver is None:
            return
        want_host, want_port = settings.file.proxy.listen_host, settings.file.proxy.listen_port
        bound = [(str(a[0]), int(a[1])) for a in proxyserver.listen_addrs()]
        if bound and all(_same(host, port, want_host, want_port) for host, port in bound):
            return
        shown = ", ".join(f"{h or '*'}:{p}" for h, p in bound) or "nothing"
        log.error(
            "LlaMaKey: this proxy listens on %s, but %s says proxy.listen_host = %r, "
            "proxy.listen_port = %d; stopping. Start mitmdump with --listen-host %s -p %d "
            "(or change the config).",
            shown,
            settings.path,
            want_host,
            want_port,
            want_host,
            want_port,
        )
        ctx.master.shutdown()


def _same(host: str, port: int, want_host: str, want_port: int) -> bool:
    if port != want_port:
        return False
    if want_host in _ANY:
        return host in _ANY
    return host == want_host or (want_host == "localhost" and host in ("127.0.0.1", "::1"))
