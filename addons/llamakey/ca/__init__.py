"""Our own name-constrained CA for the gateway's TLS interception.

mitmproxy's ``CertStore.from_store(confdir, "mitmproxy", ...)`` loads ``<confdir>/mitmproxy-ca.pem``
(private key + CA certificate) when it exists and only generates its own, unconstrained CA when it
is missing. We create that file first, with X.509 Name Constraints that permit only the configured
provider domains (and exclude every IP address). Clients that trust this CA then cannot be fooled by
a stolen CA key into accepting a certificate for any other site: OpenSSL, Go, browsers, ... enforce
the constraints of a trust anchor.

- `llamakey.ca.constraints`: provider host patterns as DNS name constraints, and the RFC 5280
  rules that match them (no files);
- `llamakey.ca.files`: the files of the certs directory (mitmproxy's names, their modes, atomic
  writes), loading the CA, and the client bundle (system roots + our CA);
- `llamakey.ca.issue`: building the CA and `init_ca`;
- `llamakey.ca.fingerprints`: the certificate handed out to clients and its fingerprint;
- `llamakey.ca.checks`: what `lmk check` and the CA watch ask (`ca_problems`,
  `uncovered_hosts`, `is_name_constrained`, `reissue_hint`, ...);
- `llamakey.ca.errors`: `CAError`, which all of them raise.

Every public name is re-exported here (``from llamakey import ca``, then ``ca.init_ca``); the
helpers the modules share among themselves are not. The package imports nothing else of
llamakey.
"""

from llamakey.ca.checks import (
    ca_private_key_mode_ok,
    ca_problems,
    is_name_constrained,
    reissue_hint,
    uncovered_hosts,
)
from llamakey.ca.constraints import permitted_names
from llamakey.ca.errors import CAError
from llamakey.ca.files import (
    BUNDLE_FILE,
    CA_CERT_CER_FILE,
    CA_CERT_FILE,
    CA_CERT_P12_FILE,
    CA_KEY_FILE,
    CA_KEY_P12_FILE,
    client_bundle,
    write_client_bundle,
)
from llamakey.ca.fingerprints import (
    ca_certificate_pem,
    ca_fingerprint,
    fingerprint,
    load_ca_certificate,
    normal_fingerprint,
)
from llamakey.ca.issue import init_ca

__all__ = [
    "BUNDLE_FILE",
    "CA_CERT_CER_FILE",
    "CA_CERT_FILE",
    "CA_CERT_P12_FILE",
    "CA_KEY_FILE",
    "CA_KEY_P12_FILE",
    "CAError",
    "ca_certificate_pem",
    "ca_fingerprint",
    "ca_private_key_mode_ok",
    "ca_problems",
    "client_bundle",
    "fingerprint",
    "init_ca",
    "is_name_constrained",
    "load_ca_certificate",
    "normal_fingerprint",
    "permitted_names",
    "reissue_hint",
    "uncovered_hosts",
    "write_client_bundle",
]
