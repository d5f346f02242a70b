# mypy: disallow-untyped-calls=False
# (mitmproxy's web app, options and addon manager are not annotated)
"""`lmk web`'s master: mitmweb's UI on the gateway's lean addon set."""

from __future__ import annotations

from mitmproxy import master, options
from mitmproxy.addons import errorcheck, eventstore, export, view
from mitmproxy.tools.web import app as web_app
from mitmproxy.tools.web import webaddons
from mitmproxy.tools.web.master import WebMaster

from llamakey import webguard
from llamakey.server import flow_addons, proxy_addons


class GatewayWebMaster(WebMaster):
    """mitmweb's UI on the gateway's lean addon set: no script loader, map-remote/local,
    modify-headers/body, replay, intercept, upstream auth, ...: nothing that could send a
    request (and its real key) anywhere else or run code. The UI's API is guarded
    (`webguard.guard_api`) and every option change outside its allow-list is refused
    (`webguard.OptionGuard`, which `run` puts first in the chain).

    WebMaster's own constructor loads mitmproxy's ~30 default addons, so this one builds the
    same web parts (view, event store, web app) itself and reuses WebMaster's methods.
    """

    def __init__(self, opts: options.Options) -> None:
        master.Master.__init__(self, opts, with_termlog=True)
        self.view = view.View()
        self.view.sig_view_add.connect(self._sig_view_add)
        self.view.sig_view_remove.connect(self._sig_view_remove)
        self.view.sig_view_update.connect(self._sig_view_update)
        self.view.sig_view_refresh.connect(self._sig_view_refresh)
        self.events = eventstore.EventStore()
        self.events.sig_add.connect(self._sig_events_add)
        self.events.sig_refresh.connect(self._sig_events_refresh)
        self.options.changed.connect(self._sig_options_update)
        self.addons.add(
            *proxy_addons(),
            *flow_addons(),
            export.Export(),  # "copy as curl" (the one command the API runs, scrubbed)
            webaddons.WebAddon(),
            webaddons.WebAuth(),
            self.view,
            self.events,
            errorcheck.ErrorCheck(),
        )
        self.app = web_app.Application(self, self.options.web_debug)
        webguard.guard_api(self.app)
        self.proxyserver = self.addons.get("proxyserver")
        self.proxyserver.servers.changed.connect(self._sig_servers_changed)
