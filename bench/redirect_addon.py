"""The only addon that the *stock mitmdump* scenario runs: send provider connections to the mock.

It changes nothing but the TCP destination of upstream connections in ``server_connect``: the
scheme, Host header and SNI stay ``api.openai.com`` (reference, section 1.8 B), so the proxy does
the same TLS work as it would against the real provider. This is the floor that the gateway is
measured against: everything above it is the cost of our addons.

It also streams ``text/event-stream`` answers (``flow.response.stream = True``): stock mitmproxy
buffers every body by default, which would hold a whole SSE answer until it ends; no one would
deploy an LLM proxy like that, so the floor streams too (reference, section 2.1).

Run with ``--set bench_mock=127.0.0.1:<port>``.
"""

from __future__ import annotations

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy import server_hooks

_PROVIDERS = frozenset({"api.openai.com", "api.anthropic.com"})


class Redirect:
    """Dial the mock upstream instead of the provider; keep everything else."""

    def __init__(self) -> None:
        self.target: tuple[str, int] | None = None

    def load(self, loader: Loader) -> None:
        loader.add_option("bench_mock", str, "", "host:port of the mock upstream")

    def configure(self, updated: set[str]) -> None:
        if "bench_mock" in updated and ctx.options.bench_mock:
            host, _, port = ctx.options.bench_mock.rpartition(":")
            self.target = (host, int(port))

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        addr = data.server.address
        if self.target is not None and addr is not None and addr[0] in _PROVIDERS:
            data.server.address = self.target

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        if flow.response.headers.get("content-type", "").startswith("text/event-stream"):
            flow.response.stream = True


addons = [Redirect()]
