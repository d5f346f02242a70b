# mypy: disallow-untyped-calls=False
# (mitmproxy's web app, options and addon manager are not annotated)
"""Forged leaf certificates name exactly one host: the one the client asked for.

mitmproxy's TlsConfig puts several names in the certificate it forges for a client: the TLS
server name (or, without one, the proxy's own IP address), plus the host of the CONNECT
target, plus, with `upstream_cert`, every name of the real certificate. A client that sends
``CONNECT 1.2.3.4:443`` with the server name ``api.openai.com`` would get a certificate for
both, and ``CONNECT api.anthropic.com:443`` with the server name ``api.openai.com`` one that
vouches for two providers at once. Our CA excludes IP addresses, so a leaf with an IP in it is
also refused as a whole by every client.

Here the leaf names exactly the TLS server name, or, when the client sent none, the host name
of the CONNECT target; never an IP address. A client that gave neither a server name nor a host
name gets a certificate for ``no-server-name.invalid``, which no client accepts.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from cryptography import x509
from mitmproxy import certs, ctx
from mitmproxy.addons import tlsconfig
from mitmproxy.proxy import context

#: The name of a leaf for a client that named no host (RFC 2606: .invalid never resolves).
NO_NAME = "no-server-name.invalid"


def _dns_name(value: str | None) -> str | None:
    """``value`` as an ASCII DNS name, or None when it is empty, an IP literal or no name."""
    if not value:
        return None
    host = value.strip().removesuffix(".")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        return None
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return ascii_host or None


def leaf_name(conn_context: context.Context) -> str:
    """The one name a forged leaf carries for this connection."""
    name = _dns_name(conn_context.client.sni)
    if name is None and not conn_context.client.sni and conn_context.server.address:
        name = _dns_name(conn_context.server.address[0])
    return name or NO_NAME


def exact_leaf(certstore: certs.CertStore, conn_context: context.Context) -> certs.CertStoreEntry:
    """A leaf from ``certstore`` whose only name (SAN and CN) is `leaf_name`."""
    name = leaf_name(conn_context)
    return certstore.get_cert(name, [x509.DNSName(name)])


class LeafTlsConfig(tlsconfig.TlsConfig):
    """mitmproxy's TlsConfig, forging leaves that carry only `leaf_name` (no IP, no extra
    names, nothing copied from the upstream certificate). Keeps the addon name `tlsconfig`."""

    name = "tlsconfig"

    def get_cert(self, conn_context: context.Context) -> certs.CertStoreEntry:
        return exact_leaf(self.certstore, conn_context)


class ExactLeafNames:
    """For `mitmdump -s addons/entry.py`: make the TlsConfig mitmproxy already loaded forge
    `exact_leaf` certificates too (lmk serve/web load `LeafTlsConfig` instead)."""

    def load(self, loader: object) -> None:
        self._patch()

    def running(self) -> None:
        self._patch()

    @staticmethod
    def _patch() -> None:
        addon: Any = ctx.master.addons.get("tlsconfig")
        if addon is None or isinstance(addon, LeafTlsConfig):
            return
        if getattr(addon, "_lmk_exact_leaf", False):
            return

        def get_cert(conn_context: context.Context) -> certs.CertStoreEntry:
            return exact_leaf(addon.certstore, conn_context)

        addon.get_cert = get_cert
        addon._lmk_exact_leaf = True
