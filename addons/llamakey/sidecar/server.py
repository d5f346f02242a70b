# mypy: disallow-untyped-calls=False
# (mitmproxy's options and addon manager are not annotated)
"""`lmk sidecar`'s engine: a lean mitmproxy master in upstream mode, chained to the central
proxy.

The application dials the sidecar (``HTTPS_PROXY``) and trusts the sidecar's own CA, made
in its own certs directory by our `ca` package (name-constrained to the provider hosts). For a
provider host the sidecar intercepts TLS, adds the credential (`AddCredential`) and opens TLS
to the same host through the central proxy (``CONNECT`` to it, mitmproxy's upstream mode),
which intercepts it again with the central CA. That CA is the only one the sidecar trusts
upstream (`ssl_verify_upstream_trusted_ca` replaces the default roots): a certificate it did
not sign, the provider's real one included, ends the connection, so the credential goes to the
central proxy or nowhere. Other hosts are tunneled through the central proxy untouched; it
tunnels or blocks them as it is configured to.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from mitmproxy import exceptions, master, options
from mitmproxy.addons import errorcheck, next_layer

from llamakey import ca, filemodes, leafcert
from llamakey.clientenv import client_environment, export_lines, proxy_authority
from llamakey.providers import BUILTIN_PROVIDERS, ProviderIndex
from llamakey.server import proxy_addons, run_until_signalled
from llamakey.sidecar.addon import AddCredential
from llamakey.sidecar.sources import CredentialSource
from llamakey.steps.redact import install_log_scrubber

PLACEHOLDER_KEY = "set-by-lmk-sidecar"
"""What the application's SDK key variables hold: SDKs refuse to start without a key, and
the sidecar replaces whatever they send."""


@dataclass(frozen=True, slots=True)
class SidecarSettings:
    """What `lmk sidecar` was told."""

    central: tuple[str, int]  # the central proxy's host and port (plain HTTP proxy protocol)
    central_ca: Path  # the central proxy's CA certificate: the only one trusted upstream
    listen: tuple[str, int]
    certs_dir: Path  # the sidecar's own CA and client bundle
    proxy_auth: bool  # also send the credential as proxy credentials on every CONNECT


def provider_index() -> ProviderIndex:
    """The hosts the sidecar intercepts: the built-in catalogue's."""
    return ProviderIndex(BUILTIN_PROVIDERS.values())


def sidecar_options(settings: SidecarSettings, index: ProviderIndex) -> dict[str, object]:
    return {
        "mode": [f"upstream:http://{proxy_authority(*settings.central)}"],
        "confdir": str(settings.certs_dir),
        "allow_hosts": [index.allow_hosts_regex()],
        "ssl_verify_upstream_trusted_ca": str(settings.central_ca),
        # Dial the central proxy only for a request: a CONNECT alone opens nothing upstream.
        "connection_strategy": "lazy",
        # The central proxy's leaf names one host: copy nothing into ours (as `lmk serve`).
        "upstream_cert": False,
    }


class SidecarMaster(master.Master):
    """mitmdump's engine with what a sidecar needs: no flow view, no saved flows, no UI."""

    def __init__(self, opts: options.Options, credential: AddCredential) -> None:
        super().__init__(opts, with_termlog=True)
        self.addons.add(
            *proxy_addons(),
            credential,
            next_layer.NextLayer(),
            leafcert.LeafTlsConfig(),  # forged leaves name exactly the host asked for
            errorcheck.ErrorCheck(),
        )


class SidecarBanner:
    """Says, once the sidecar listens, where, through which central proxy, with which
    credential (a marker), and the environment the application needs."""

    def __init__(self, settings: SidecarSettings, source: CredentialSource) -> None:
        self.settings = settings
        self.source = source

    def running(self) -> None:
        from mitmproxy import ctx

        proxyserver = ctx.master.addons.get("proxyserver")
        addrs = proxyserver.listen_addrs() if proxyserver else []
        host, port = (addrs[0][0], addrs[0][1]) if addrs else self.settings.listen
        where = proxy_authority(host, port)
        env = client_environment(
            "", PLACEHOLDER_KEY, where, proxy_auth=False, certs_dir=self.settings.certs_dir
        )
        lines = [
            f"LlaMaKey sidecar listening on http://{where}",
            f"  central:    http://{proxy_authority(*self.settings.central)}"
            f" (its CA: {self.settings.central_ca})",
            f"  credential: {self.source.describe()}"
            + (", also as proxy credentials" if self.settings.proxy_auth else ""),
            f"  CA:         {self.settings.certs_dir / ca.CA_CERT_FILE}",
            "  the application's environment:",
            *(f"    {line}" for line in export_lines(env)),
        ]
        print("\n".join(lines), file=sys.stderr, flush=True)


async def run(settings: SidecarSettings, source: CredentialSource) -> int:
    """Run the sidecar until SIGINT/SIGTERM."""
    filemodes.restrict_umask()  # its CA key and anything else it writes: 0600
    index = provider_index()
    ca.init_ca(settings.certs_dir, index.host_patterns())  # kept when there is one
    if uncovered := ca.uncovered_hosts(settings.certs_dir, index.host_patterns()):
        print(
            f"lmk: warning: the sidecar's CA in {settings.certs_dir} does not permit "
            f"{', '.join(uncovered)}, so clients will refuse those hosts: move the directory "
            "away and start the sidecar again for a new CA (then give the application its "
            "new bundle)",
            file=sys.stderr,
        )
    opts = options.Options(listen_host=settings.listen[0], listen_port=settings.listen[1])
    credential = AddCredential(source, index, proxy_auth=settings.proxy_auth)
    m = SidecarMaster(opts, credential)
    m.addons.add(SidecarBanner(settings, source))
    install_log_scrubber(credential)
    # The embedded master leaves the root logger at WARNING: let the sidecar's own info lines
    # (a key file followed) through, as `lmk serve` does (steps/announce.py).
    logging.getLogger("llamakey").setLevel(logging.INFO)
    try:
        opts.update(**sidecar_options(settings, index))
    except exceptions.OptionsError as error:
        print(f"lmk: {error}", file=sys.stderr)
        return 2
    return await run_until_signalled(m)
