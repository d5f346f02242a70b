"""Run the gateway: a lean mitmdump engine (`lmk serve`) or mitmweb's (`lmk web`), embedded.

Our addons go where `-s` scripts would (right after mitmproxy's ScriptLoader, or the proxy
server where there is none), before Save and mitmweb's View, so those see flows only as our
hooks leave them (markers, never keys). Both masters forge leaves naming exactly the host the
client asked for (`leafcert`); `lmk web` adds mitmweb's UI, guarded (`webguard`).
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
)
from mitmproxy.proxy.mode_specs import ProxyMode

from llamakey import config, filemodes, leafcert
from llamakey.config.schema import open_proxy_problem
from llamakey.gateway import Gateway, gateway_addons
from llamakey.state import GatewayState
from llamakey.steps.configload import ConfigLoader


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
            "  clients:   LMK_MASTER_KEY=lmk_... lmk env NAME  (writes llamakey_local.env)"
        )
        if self.web_url:
            lines.append(f"  mitmweb:   {self.web_url}")
        print("\n".join(lines), file=sys.stderr, flush=True)


def proxy_addons() -> list[object]:
    """The mitmproxy addons both masters run, in mitmproxy's own order."""
    return [
        core.Core(),
        block.Block(),  # refuses clients from public addresses unless told otherwise
        proxyserver.Proxyserver(),
    ]


def flow_addons() -> list[object]:
    """What comes after our steps: protocol detection, saved flows, TLS (exact-name leaves)."""
    return [
        next_layer.NextLayer(),
        save.Save(),  # -w / save_stream_file
        leafcert.LeafTlsConfig(),
    ]


class GatewayMaster(master.Master):
    """mitmdump's engine with only the mitmproxy addons a key gateway uses.

    mitmproxy calls every hook on every addon in the chain, so each builtin we leave out
    (map-local, stickycookie, server playback, ...: about thirty) is work not done for every
    request. `mitmdump -s addons/entry.py` keeps them all, for people who want them.
    """

    def __init__(self, opts: options.Options) -> None:
        super().__init__(opts, with_termlog=True)
        self.addons.add(
            *proxy_addons(),
            script.ScriptLoader(),  # --set scripts=... still works; ours go right after it
            *flow_addons(),
            errorcheck.ErrorCheck(),
        )


def insert_gateway(m: master.Master, addons: Sequence[object]) -> None:
    """Register our addons where `-s` scripts go: right after the script loader, or after the
    proxy server where there is none."""
    chain = m.addons.chain
    anchor = m.addons.get("scriptloader") or m.addons.get("proxyserver")
    position = chain.index(anchor) + 1
    for offset, addon in enumerate(addons):
        chain.insert(position + offset, m.addons.register(addon))


def listen_problem(opts: options.Options, settings: config.Settings) -> str | None:
    """Why the addresses the proxy would listen on make an open proxy (`--set listen_host`,
    a `mode` with `@host:port`), or None."""
    hosts = [ProxyMode.parse(spec).listen_host(opts.listen_host) for spec in opts.mode]
    for host in [opts.listen_host, *hosts]:
        if problem := open_proxy_problem(host, settings.file.proxy):
            return problem
    return None


async def run(config_path: Path, sets: Sequence[str], *, web: bool = False) -> int:
    """Start the proxy on the given config and run until SIGINT/SIGTERM."""
    settings = config.load(config_path)  # fail early, with the config's own message
    # From here on every file this process creates is 0600 (the CA's public files and the
    # client bundle set 0644 themselves); an existing -w file is made 0600 too.
    filemodes.restrict_umask()
    saved = [spec.partition("=")[2] for spec in sets if spec.startswith("save_stream_file=")]
    filemodes.tighten(saved[-1] if saved else None)
    proxy = settings.file.proxy
    opts = options.Options(listen_host=proxy.listen_host, listen_port=proxy.listen_port)
    state = GatewayState()
    ours = gateway_addons(state)
    web_ui = _WebUI(opts, proxy) if web else None
    m = web_ui.master if web_ui else GatewayMaster(opts)
    insert_gateway(m, [Gateway(ours)])
    m.addons.add(Banner(state, web_ui.url if web_ui else None))
    try:
        opts.update(lmk_config=str(config_path.resolve()))
        if state.settings is None:  # the option kept its default value: no configure fired
            loader = next(a for a in ours if isinstance(a, ConfigLoader))
            m.addons.invoke_addon_sync(loader, hooks.ConfigureHook({"lmk_config"}))
        if web_ui:
            web_ui.seal_at_start(ours)
        if sets:
            if web_ui:
                web_ui.refuse_unknown(sets)
            opts.set(*sets)
        if web_ui:
            web_ui.seal_running()
        if state.settings is not None and (problem := listen_problem(opts, state.settings)):
            raise exceptions.OptionsError(problem)
    except exceptions.OptionsError as error:
        print(f"lmk: {error}", file=sys.stderr)
        return 2
    return await run_until_signalled(m)


async def run_until_signalled(m: master.Master) -> int:
    """Run `m` until SIGINT or SIGTERM asks it to shut down (`lmk serve`, `lmk sidecar`)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, m.shutdown)
    await m.run()
    return 0


class _WebUI:
    """`lmk web`'s parts: the lean web master, its token, and the option guard."""

    def __init__(self, opts: options.Options, proxy: config.ProxyTable) -> None:
        from llamakey import webguard  # mitmweb (tornado) only for `lmk web`
        from llamakey.webmaster import GatewayWebMaster

        self.webguard = webguard
        self.master = GatewayWebMaster(opts)
        self.opts = opts
        token = secrets.token_urlsafe(18)
        webguard.hide_in_logs(token)  # printed once, by the banner; never in a log line
        opts.update(
            web_host=proxy.web_host,
            web_port=proxy.web_port,
            web_open_browser=False,
            web_password=token,
            web_columns=["method", "path", "status", "size", "time", "comment"],
        )
        self.url = f"http://{proxy.web_host}:{proxy.web_port}/?token={token}"
        self.guard = webguard.OptionGuard()
        # First in the chain: no addon ever acts on a value the guard refuses.
        self.master.addons.chain.insert(0, self.master.addons.register(self.guard))

    def seal_at_start(self, ours: Sequence[object]) -> None:
        """From now on only START_OPTIONS change, and what the config loader applies from the
        file on a reload (confdir, allow_hosts, upstream trust)."""
        for addon in ours:
            if isinstance(addon, ConfigLoader):
                addon._apply = self.guard.trusted(addon._apply)  # type: ignore[method-assign]
        self.guard.seal(self.webguard.START_OPTIONS)

    def refuse_unknown(self, sets: Sequence[str]) -> None:
        """`--set` names mitmproxy does not even load here get the guard's own refusal (the
        guard refuses the others as they are set)."""
        allowed = self.webguard.START_OPTIONS
        names = {spec.partition("=")[0] for spec in sets}
        unknown = [n for n in names if n not in allowed and n not in self.opts]
        if unknown:
            raise exceptions.OptionsError(self.webguard.refusal(unknown, allowed))

    def seal_running(self) -> None:
        self.guard.seal(self.webguard.UI_OPTIONS)
