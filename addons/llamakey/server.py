"""Run the gateway: mitmproxy's DumpMaster (`lmk serve`) or WebMaster (`lmk web`), embedded.

Our addons go where `-s` scripts would: right after mitmproxy's ScriptLoader, before Save,
Dumper and View, so those see flows only as our hooks leave them (markers, never keys).
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from mitmproxy import exceptions, hooks, master, options
from mitmproxy.addons import (
    block,
    core,
    errorcheck,
    next_layer,
    proxyserver,
    save,
    script,
    tlsconfig,
)

from llamakey import config
from llamakey.gateway import gateway_addons
from llamakey.state import GatewayState


class Banner:
    """Says, once the proxy listens, where it is and how a client connects."""

    def __init__(self, state: GatewayState, web_url: str | None) -> None:
        self.state = state
        self.web_url = web_url

    def running(self) -> None:
        from mitmproxy import ctx

        proxyserver = ctx.master.addons.get("proxyserver")
        addrs = proxyserver.listen_addrs() if proxyserver else []
        host, port = (addrs[0][0], addrs[0][1]) if addrs else ("?", 0)
        settings = self.state.settings
        lines = [f"LlaMaKey proxy listening on http://{host}:{port}"]
        if settings is not None:
            ready = sorted(n for n, p in settings.providers.items() if p.keyring)
            lines.append(f"  config:    {settings.path}")
            lines.append(f"  providers: {', '.join(ready) or 'none has a real key yet'}")
            lines.append(f"  CA:        {settings.certs_dir / 'mitmproxy-ca-cert.pem'}")
        lines.append(
            '  clients:   eval "$(lmk env NAME --key lmk_...)"  (or source llamakey_local.env)'
        )
        if self.web_url:
            lines.append(f"  mitmweb:   {self.web_url}")
        print("\n".join(lines), file=sys.stderr, flush=True)


class GatewayMaster(master.Master):
    """mitmdump's engine with only the mitmproxy addons a key gateway uses.

    mitmproxy calls every hook on every addon in the chain, so each builtin we leave out
    (map-local, stickycookie, server playback, ...: about thirty) is work not done for every
    request. `mitmdump -s addons/entry.py` keeps them all, for people who want them.
    """

    def __init__(self, opts: options.Options) -> None:
        super().__init__(opts, with_termlog=True)
        self.addons.add(
            core.Core(),
            block.Block(),  # refuses clients from public addresses unless told otherwise
            proxyserver.Proxyserver(),
            script.ScriptLoader(),  # --set scripts=... still works; ours go right after it
            next_layer.NextLayer(),
            save.Save(),  # -w / save_stream_file
            tlsconfig.TlsConfig(),
            errorcheck.ErrorCheck(),
        )


def insert_after_scriptloader(m: master.Master, addons: Sequence[object]) -> None:
    """Register addons at the position `-s` scripts take in the chain."""
    chain = m.addons.chain
    position = chain.index(m.addons.get("scriptloader")) + 1
    for offset, addon in enumerate(addons):
        chain.insert(position + offset, m.addons.register(addon))


async def run(config_path: Path, sets: Sequence[str], *, web: bool = False) -> int:
    """Start the proxy on the given config and run until SIGINT/SIGTERM."""
    settings = config.load(config_path)  # fail early, with the config's own message
    proxy = settings.file.proxy
    opts = options.Options(listen_host=proxy.listen_host, listen_port=proxy.listen_port)
    web_url = None
    if web:
        from mitmproxy.tools.web.master import WebMaster

        m: master.Master = WebMaster(opts, with_termlog=True)
        token = secrets.token_urlsafe(18)
        opts.update(
            web_host=proxy.web_host,
            web_port=proxy.web_port,
            web_open_browser=False,
            web_password=token,
            web_columns=["method", "path", "status", "size", "time", "comment"],
        )
        web_url = f"http://{proxy.web_host}:{proxy.web_port}/?token={token}"
    else:
        m = GatewayMaster(opts)
    state = GatewayState()
    ours = gateway_addons(state)
    insert_after_scriptloader(m, ours)
    m.addons.add(Banner(state, web_url))
    opts.update(lmk_config=str(config_path.resolve()))
    try:
        if sets:
            opts.set(*sets)
        if state.settings is None:  # the option kept its default value: no configure fired
            m.addons.invoke_addon_sync(ours[0], hooks.ConfigureHook({"lmk_config"}))
    except exceptions.OptionsError as error:
        print(f"lmk: {error}", file=sys.stderr)
        return 2
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, m.shutdown)
    await m.run()
    return 0
