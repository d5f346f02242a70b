"""The sidecar's one addon: the credential goes into every provider request, where the
application's SDK put its own key, and nowhere else.

The application sends no key, or a placeholder, or even a key of its own: whatever it put in
any credential carrier (``Authorization``, ``x-api-key``, ``api-key``, ``x-goog-api-key``,
``?key=``, the WebSocket key protocol) is removed, and the sidecar's credential goes into the
carriers the SDK used (none: the provider's own carrier). The application's proxy
credentials never go on either. The request then travels to the central proxy inside TLS
that the sidecar verified against the central proxy's CA, so the credential reaches only it.
"""

from __future__ import annotations

import base64
import logging
import re
import traceback
from collections.abc import Sequence

from mitmproxy import http
from mitmproxy.proxy import mode_specs

from llamakey import credentials
from llamakey.providers import Carrier, ErrorShape, Provider, ProviderIndex
from llamakey.refusals import Refusal, refusal_response
from llamakey.scrub import MASTER_KEY_PATTERN, Scrubber
from llamakey.sidecar.sources import CredentialSource, CredentialUnavailable

log = logging.getLogger(__name__)

_MASTER_KEY = re.compile(MASTER_KEY_PATTERN)

PROXY_USER = "lmk-sidecar"
"""The user name of the proxy credentials the sidecar sends (the central proxy identifies
the key, never the name)."""


def basic_proxy_authorization(user: str, secret: str) -> str:
    """A ``Proxy-Authorization`` value, as ``HTTPS_PROXY=http://USER:SECRET@host`` makes it."""
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


class AddCredential:
    """Puts the credential into each provider request (and, with `proxy_auth`, on each CONNECT
    to the central proxy); refuses, in the provider's shape, a request it cannot vouch for."""

    def __init__(self, source: CredentialSource, index: ProviderIndex, *, proxy_auth: bool) -> None:
        self.source = source
        self.index = index
        self.proxy_auth = proxy_auth
        self._recent: tuple[str, ...] = ()
        self._scrubber = Scrubber(())

    @property
    def scrubber(self) -> Scrubber:
        """Masks the credentials sent lately (and anything shaped like a master key) in every
        log record (`steps.redact.install_log_scrubber`)."""
        return self._scrubber

    async def _credential(self) -> str:
        credential = await self.source.current()
        if credential not in self._recent:
            self._recent = (credential, *self._recent[:1])  # a token just replaced, too
            # A master key is masked as one already (by its shape, with its marker).
            self._scrubber = Scrubber(c for c in self._recent if not _MASTER_KEY.fullmatch(c))
        return credential

    def _provider(self, flow: http.HTTPFlow) -> tuple[Provider | None, bool]:
        """(the provider the request is for, whether the tunnel's name and the request agree).

        Only requests inside TLS the sidecar intercepted count: it intercepts provider hosts
        only (`allow_hosts`), and a plain-HTTP request never gets the credential."""
        if not flow.client_conn.tls_established:
            return None, True
        by_host = self.index.lookup(flow.request.pretty_host)
        tunnel = _tunnel_name(flow)
        by_tunnel = self.index.lookup(tunnel) if tunnel else by_host
        return by_tunnel or by_host, by_tunnel is by_host

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        # The application's own proxy credentials are for the sidecar, which needs none.
        flow.request.headers.pop("proxy-authorization", None)
        if flow.response:
            return
        shape = ErrorShape.OPENAI
        try:
            provider, agree = self._provider(flow)
            shape = provider.error_shape if provider else shape
            await self._add(flow, provider, agree)
        except Exception:  # fail closed: no request goes on that the sidecar did not finish
            log.error(
                "LlaMaKey sidecar failed on %s; the request was not sent:\n%s",
                flow.request.pretty_url,
                self._scrubber.text(traceback.format_exc()),
            )
            flow.response = refusal_response(
                shape, Refusal.INTERNAL_ERROR, "internal error in the sidecar"
            )

    async def _add(self, flow: http.HTTPFlow, provider: Provider | None, agree: bool) -> None:
        if provider is None:
            if self.proxy_auth and _plain_to_upstream(flow):
                header = basic_proxy_authorization(PROXY_USER, await self._credential())
                flow.request.headers["proxy-authorization"] = header
            return
        if not agree:
            flow.response = refusal_response(
                provider.error_shape,
                Refusal.MISDIRECTED,
                f"the request names {flow.request.pretty_host!r} inside a tunnel to "
                f"{_tunnel_name(flow)!r}: the sidecar adds its credential to neither",
            )
            return
        try:
            credential = await self._credential()
        except CredentialUnavailable as error:
            log.error("LlaMaKey sidecar: no credential for %s: %s", provider.name, error)
            flow.response = refusal_response(
                provider.error_shape,
                Refusal.CREDENTIAL_UNAVAILABLE,
                f"the sidecar has no credential to send: {error}",
            )
            return
        carriers = _carriers_used(flow.request) or [provider.default_carrier]
        credentials.clear_credentials(flow.request, Carrier)
        for carrier in carriers:
            credentials.set_credential(flow.request, carrier, credential)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        # Streamed answers (server-sent events) reach the application as they come.
        if flow.response is not None:
            flow.response.stream = True

    async def http_connect_upstream(self, flow: http.HTTPFlow) -> None:
        """With `proxy_auth`: the CONNECT to the central proxy carries the credential."""
        if not self.proxy_auth:
            return
        try:
            credential = await self._credential()
        except CredentialUnavailable as error:
            # No header: the central proxy answers 407 and the application sees the tunnel fail.
            log.error("LlaMaKey sidecar: no credential for the CONNECT: %s", error)
            return
        flow.request.headers["proxy-authorization"] = basic_proxy_authorization(
            PROXY_USER, credential
        )


def _tunnel_name(flow: http.HTTPFlow) -> str | None:
    """The host the tunnel was opened for: the TLS server name, else the CONNECT target's."""
    if flow.client_conn.sni:
        return flow.client_conn.sni
    return flow.server_conn.address[0] if flow.server_conn.address else None


def _carriers_used(request: http.Request) -> Sequence[Carrier]:
    """The carriers the application's SDK put a key in (each once, in preference order)."""
    return list(dict.fromkeys(carrier for carrier, _ in credentials.presented(request)))


def _plain_to_upstream(flow: http.HTTPFlow) -> bool:
    """A plain-HTTP request the sidecar forwards to the central proxy as a proxy request."""
    return (
        isinstance(flow.client_conn.proxy_mode, mode_specs.UpstreamMode)
        and flow.request.scheme == "http"
    )
