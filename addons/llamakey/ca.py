"""Our own name-constrained CA for the gateway's TLS interception.

mitmproxy's ``CertStore.from_store(confdir, "mitmproxy", ...)`` loads ``<confdir>/mitmproxy-ca.pem``
(private key + CA certificate) when it exists and only generates its own, unconstrained CA when it
is missing. We create that file first, with X.509 Name Constraints that permit only the configured
provider domains (and exclude every IP address). Clients that trust this CA then cannot be fooled by
a stolen CA key into accepting a certificate for any other site: OpenSSL, Go, browsers, ... enforce
the constraints of a trust anchor.

Files written to the certs directory (mitmproxy's names, so its onboarding app serves ours):

==========================  ===========================================  =====
mitmproxy-ca.pem            private key + CA certificate (what mitmproxy  0600
                            loads)
mitmproxy-ca.p12            the same as PKCS#12                           0600
mitmproxy-ca-cert.pem       CA certificate only: distribute this          0644
mitmproxy-ca-cert.cer       the same PEM, .cer extension for Android      0644
mitmproxy-ca-cert.p12       CA certificate only, PKCS#12 (Windows)        0644
client-bundle.pem           system roots + our CA, for SSL_CERT_FILE etc. 0644
==========================  ===========================================  =====

mitmproxy itself adds ``mitmproxy-dhparam.pem`` (public DH parameters) when it loads the store.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import re
import secrets
import ssl
import stat
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

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

# mitmproxy's TlsConfig only ever looks for basename "mitmproxy" in its confdir.
_BASENAME = "mitmproxy"
CA_KEY_FILE = f"{_BASENAME}-ca.pem"
CA_KEY_P12_FILE = f"{_BASENAME}-ca.p12"
CA_CERT_FILE = f"{_BASENAME}-ca-cert.pem"
CA_CERT_CER_FILE = f"{_BASENAME}-ca-cert.cer"
CA_CERT_P12_FILE = f"{_BASENAME}-ca-cert.p12"
BUNDLE_FILE = "client-bundle.pem"
# mitmproxy caches this zip (built from the CA cert) and never rebuilds it while it exists, so a
# new CA has to remove it or the onboarding app would keep handing out the old certificate.
_MAGISK_FILE = f"{_BASENAME}-magisk-module.zip"

_SECRET_MODE = 0o600
_PUBLIC_MODE = 0o644
_DIR_MODE = 0o700

_CA_VALIDITY = datetime.timedelta(days=10 * 365)
# Backdated like mitmproxy's own certificates, for clients whose clocks run slow.
_CA_BACKDATE = datetime.timedelta(days=2)
_RSA_KEY_SIZE = 2048

_SYSTEM_BUNDLE_FALLBACK = Path("/etc/ssl/certs/ca-certificates.crt")
_PEM_CERT_RE = re.compile(rb"-----BEGIN CERTIFICATE-----\s.+?-----END CERTIFICATE-----", re.DOTALL)
# One DNS label: letters, digits, hyphen; underscore too, since some service names use it.
_LABEL_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


# The key types mitmproxy's CertStore accepts.
_PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class CAError(Exception):
    """CA material missing, unreadable or not fitting the configured hosts."""


# --------------------------------------------------------------------------------------------
# Host patterns and name constraints
# --------------------------------------------------------------------------------------------


def _normalize_host(host: str) -> str:
    """Lower-case, strip a trailing dot and validate one host pattern ("*." only leftmost).

    Raises CAError for anything that cannot become a DNS name constraint: IP addresses (the CA
    excludes all IPs), ports, bare "*", wildcards inside a label, non-ASCII (use the xn-- form).
    """
    name = host.strip().lower().removesuffix(".")
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        pass
    else:
        raise CAError(f"{host!r}: IP addresses cannot be provider hosts (the CA excludes all IPs)")
    if not name.isascii():
        raise CAError(f"{host!r}: use the ASCII (xn--) form of internationalised names")
    base = name.removeprefix("*.")
    labels = base.split(".")
    if len(base) > 253 or not all(_LABEL_RE.match(label) for label in labels):
        raise CAError(f"{host!r} is not a host name or a '*.domain' pattern")
    if name.startswith("*.") and len(labels) < 2:
        # "*.com" would let the CA sign for a whole top-level domain.
        raise CAError(f"{host!r}: a wildcard needs at least two labels after '*.'")
    return name


def permitted_names(hosts: Iterable[str]) -> list[str]:
    """Host patterns -> DNS name constraints.

    "api.openai.com" stays (RFC 5280: permits it and its subdomains); "*.openai.azure.com"
    becomes ".openai.azure.com" (subdomains only, the bare domain is not needed). The result is
    sorted and deduplicated. Raises CAError for a pattern that cannot be constrained.
    """
    names = set()
    for host in hosts:
        name = _normalize_host(host)
        names.add("." + name.removeprefix("*.") if name.startswith("*.") else name)
    return sorted(names)


def _dns_constraint_matches(constraint: str, name: str) -> bool:
    """True when DNS name constraint ``constraint`` covers ``name`` (RFC 5280 4.2.1.10, OpenSSL).

    "example.com" matches example.com and every subdomain; ".example.com" only subdomains;
    "" matches everything. Comparison is case-insensitive and label-aligned.
    """
    constraint = constraint.lower().removesuffix(".")
    name = name.lower().removesuffix(".")
    if not constraint:
        return True
    if constraint.startswith("."):
        return name.endswith(constraint)
    return name == constraint or name.endswith("." + constraint)


def _dns_constraint_covers_subdomains(constraint: str, base: str) -> bool:
    """True when ``constraint`` matches every name "<label>.<base>" (the host "*.<base>")."""
    constraint = constraint.lower().removesuffix(".")
    base = base.lower()
    if not constraint:
        return True
    # "<label>.<base>" ends with ".<base>", so it ends with ".c" exactly when base is c or under c.
    suffix = constraint.removeprefix(".")
    return base == suffix or base.endswith("." + suffix)


def _dns_constraint_overlaps_subdomains(constraint: str, base: str) -> bool:
    """True when ``constraint`` matches at least one name "<label>.<base>" (for exclusions)."""
    suffix = constraint.lower().removesuffix(".").removeprefix(".")
    return _dns_constraint_covers_subdomains(constraint, base) or suffix.endswith("." + base)


def _dns_subtrees(subtrees: Iterable[x509.GeneralName] | None) -> list[str] | None:
    """The DNS entries of a permitted/excluded list; None when the list constrains no DNS names."""
    if subtrees is None:
        return None
    dns = [s.value for s in subtrees if isinstance(s, x509.DNSName)]
    return dns or None


def _host_permitted(host: str, constraints: x509.NameConstraints) -> bool:
    """Whether every name matching host pattern ``host`` satisfies ``constraints`` (DNS part)."""
    permitted = _dns_subtrees(constraints.permitted_subtrees)
    excluded = _dns_subtrees(constraints.excluded_subtrees) or []
    if host.startswith("*."):
        base = host[2:]
        allowed = permitted is None or any(
            _dns_constraint_covers_subdomains(c, base) for c in permitted
        )
        return allowed and not any(_dns_constraint_overlaps_subdomains(c, base) for c in excluded)
    allowed = permitted is None or any(_dns_constraint_matches(c, host) for c in permitted)
    return allowed and not any(_dns_constraint_matches(c, host) for c in excluded)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` via a temp file + rename; the file has ``mode`` from creation on.

    os.open with the mode (and O_EXCL) means a secret is never readable by others, not even for
    the moment between create and chmod; fchmod then overrides the umask so public files really
    are 0644. The rename makes readers (mitmproxy, clients) see the old or the new file, never half.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Persist a rename in ``directory`` (best effort: not every platform can open directories)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _ensure_dir(certs_dir: Path) -> None:
    """Create ``certs_dir`` as 0700 if it does not exist; an existing directory is left alone."""
    if certs_dir.is_dir():
        return
    certs_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(certs_dir, _DIR_MODE)
    except FileExistsError:
        if not certs_dir.is_dir():
            raise CAError(f"{certs_dir} exists and is not a directory") from None
        return
    os.chmod(certs_dir, _DIR_MODE)  # mkdir's mode is filtered by the umask


def _read_ca_file(certs_dir: Path) -> bytes:
    """The bytes of mitmproxy-ca.pem; CAError when it is missing or unreadable."""
    path = certs_dir / CA_KEY_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CAError(f"no CA in {certs_dir} ({CA_KEY_FILE} missing): run `lmk ca init`") from None
    except OSError as e:
        raise CAError(f"cannot read {path}: {e}") from e


def _load_ca(certs_dir: Path) -> tuple[x509.Certificate, _PrivateKey]:
    """Read the CA certificate and private key mitmproxy would use from mitmproxy-ca.pem."""
    raw = _read_ca_file(certs_dir)
    path = certs_dir / CA_KEY_FILE
    try:
        # mitmproxy takes the first certificate of the file as its CA.
        cert = x509.load_pem_x509_certificates(raw)[0]
        key = serialization.load_pem_private_key(raw, password=None)
    except (ValueError, TypeError) as e:
        raise CAError(f"{path} needs an unencrypted private key and a certificate: {e}") from e
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CAError(f"{path}: mitmproxy needs an RSA or EC key, not {type(key).__name__}")
    if key.public_key() != cert.public_key():
        raise CAError(f"{path}: the private key does not belong to the certificate")
    return cert, key


def _load_ca_cert(certs_dir: Path) -> x509.Certificate:
    """The CA certificate from mitmproxy-ca.pem (what mitmproxy signs with)."""
    try:
        return x509.load_pem_x509_certificates(_read_ca_file(certs_dir))[0]
    except ValueError as e:
        raise CAError(f"no CA certificate in {certs_dir / CA_KEY_FILE}: {e}") from e


def _build_ca(
    names: list[str],
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """Generate an RSA key and a self-signed CA certificate constrained to DNS ``names``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=_RSA_KEY_SIZE)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "LlaMaKey CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "LlaMaKey"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.DNSName(n) for n in names],
        # A DNS-only permitted list leaves IP names unconstrained (RFC 5280), so exclude them all.
        excluded_subtrees=[
            x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
            x509.IPAddress(ipaddress.ip_network("::/0")),
        ],
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CA_BACKDATE)
        .not_valid_after(now + _CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(constraints, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _write_secret_files(certs_dir: Path, cert: x509.Certificate, key: _PrivateKey) -> None:
    """Write mitmproxy-ca.pem (key + cert, the file mitmproxy loads) and its PKCS#12 twin, 0600."""
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomic(
        certs_dir / CA_KEY_FILE,
        key_pem + cert.public_bytes(serialization.Encoding.PEM),
        _SECRET_MODE,
    )
    p12 = pkcs12.serialize_key_and_certificates(
        _BASENAME.encode(), key, cert, None, serialization.NoEncryption()
    )
    _write_atomic(certs_dir / CA_KEY_P12_FILE, p12, _SECRET_MODE)


def _write_public_files(certs_dir: Path, cert: x509.Certificate) -> None:
    """Write the certificate-only files clients install (PEM, .cer for Android, PKCS#12)."""
    pem = cert.public_bytes(serialization.Encoding.PEM)
    _write_atomic(certs_dir / CA_CERT_FILE, pem, _PUBLIC_MODE)
    _write_atomic(certs_dir / CA_CERT_CER_FILE, pem, _PUBLIC_MODE)
    p12 = pkcs12.serialize_key_and_certificates(
        _BASENAME.encode(), None, cert, None, serialization.NoEncryption()
    )
    _write_atomic(certs_dir / CA_CERT_P12_FILE, p12, _PUBLIC_MODE)


def _tighten_secret_modes(certs_dir: Path) -> None:
    """Make existing key files 0600 again (e.g. after a copy with the wrong umask)."""
    for name in (CA_KEY_FILE, CA_KEY_P12_FILE):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(certs_dir / name, _SECRET_MODE)


def init_ca(certs_dir: Path, hosts: Iterable[str], *, force: bool = False) -> Path:
    """Create the CA in ``certs_dir`` if absent (or replace it when ``force``).

    Writes mitmproxy-ca.pem (key + cert, mode 0600; the directory is created 0700 if new),
    mitmproxy-ca.p12 (0600), mitmproxy-ca-cert.pem/.cer/.p12 (cert only, 0644) and
    client-bundle.pem. Returns the path of mitmproxy-ca-cert.pem.

    Idempotent: an existing CA is kept, whatever hosts it covers (check with uncovered_hosts);
    its key files are set back to 0600 and the public files and the bundle are rewritten from it.
    Raises CAError for invalid hosts, an empty host list or an unreadable existing CA.
    """
    certs_dir = Path(certs_dir)
    names = permitted_names(hosts)
    if not names:
        raise CAError("no provider hosts: a CA permitting no names would be useless")
    _ensure_dir(certs_dir)
    if force or not (certs_dir / CA_KEY_FILE).exists():
        cert, key = _build_ca(names)
        # The key file first: it is the source of truth, everything else is derived from it.
        _write_secret_files(certs_dir, cert, key)
        with contextlib.suppress(FileNotFoundError):
            (certs_dir / _MAGISK_FILE).unlink()
    else:
        cert, _ = _load_ca(certs_dir)
        _tighten_secret_modes(certs_dir)
    _write_public_files(certs_dir, cert)
    write_client_bundle(certs_dir)
    return certs_dir / CA_CERT_FILE


# --------------------------------------------------------------------------------------------
# Client bundle
# --------------------------------------------------------------------------------------------


def _system_roots_candidates() -> list[Path]:
    """Where the system's trusted roots may be, in order of preference."""
    paths = ssl.get_default_verify_paths()
    candidates = [p for p in (paths.cafile, paths.openssl_cafile) if p]
    candidates.append(str(_SYSTEM_BUNDLE_FALLBACK))
    try:
        import certifi  # mitmproxy depends on it, but it is only a last resort here
    except ImportError:
        pass
    else:
        candidates.append(certifi.where())
    return [Path(c) for c in candidates]


def _system_roots(exclude: Path) -> bytes:
    """PEM text of the system roots; ``exclude`` (our own bundle) is skipped.

    The exclusion matters when SSL_CERT_FILE already points at client-bundle.pem (a shell set up
    for the gateway): get_default_verify_paths() then names our bundle, and appending to it again
    would grow it on every run.
    """
    for candidate in _system_roots_candidates():
        try:
            if not candidate.is_file() or (exclude.exists() and candidate.samefile(exclude)):
                continue
            data = candidate.read_bytes()
        except OSError:
            continue
        if _PEM_CERT_RE.search(data):
            return data
    raise CAError("no system CA bundle found (install ca-certificates or certifi)")


def client_bundle(ca_pem: bytes, bundle: Path) -> bytes:
    """The text of a client bundle: the system roots plus our CA certificate `ca_pem`.

    Clients need both because SSL_CERT_FILE, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, ... replace the
    default roots rather than add to them. System roots come from
    ssl.get_default_verify_paths() (cafile, then openssl_cafile) if present, else
    /etc/ssl/certs/ca-certificates.crt, else certifi.where(); `bundle` (where this text will
    go) is never taken as the system roots.
    """
    roots = _system_roots(exclude=bundle)
    body = roots if roots.endswith(b"\n") else roots + b"\n"
    return body + b"\n# LlaMaKey CA (name-constrained to the gateway's provider hosts)\n" + ca_pem


def write_client_bundle(certs_dir: Path) -> Path:
    """Write certs_dir/client-bundle.pem (`client_bundle` of our CA); returns its path."""
    certs_dir = Path(certs_dir)
    bundle = certs_dir / BUNDLE_FILE
    ours = _load_ca_cert(certs_dir).public_bytes(serialization.Encoding.PEM)
    _write_atomic(bundle, client_bundle(ours, bundle), _PUBLIC_MODE)
    return bundle


# --------------------------------------------------------------------------------------------
# Handing the CA out: its certificate and fingerprint
# --------------------------------------------------------------------------------------------


def ca_certificate_pem(certs_dir: Path) -> bytes:
    """The PEM of the CA certificate the proxy signs with (the one in mitmproxy-ca.pem)."""
    return _load_ca_cert(Path(certs_dir)).public_bytes(serialization.Encoding.PEM)


def load_ca_certificate(pem: bytes) -> x509.Certificate:
    """The one CA certificate `pem` holds; CAError for anything else (no PEM, several
    certificates, a private key, a certificate that is not a CA)."""
    if b"PRIVATE KEY" in pem:
        raise CAError("a private key where a CA certificate was expected")
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise CAError("not a PEM certificate") from None
    if len(certificates) != 1:
        raise CAError(f"{len(certificates)} certificates where one CA certificate was expected")
    try:
        is_ca = certificates[0].extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise CAError("the certificate is not a CA certificate")
    return certificates[0]


def fingerprint(cert: x509.Certificate) -> str:
    """The SHA-256 fingerprint of `cert` as `openssl x509 -fingerprint -sha256` and browsers
    show it: upper-case hex pairs joined by colons."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def normal_fingerprint(text: str) -> str | None:
    """A SHA-256 fingerprint as given by a person, in `fingerprint`'s form; None if it is not one.

    Accepted: colons or spaces between pairs or none, any case, and a leading ``sha256:`` or
    openssl's ``sha256 Fingerprint=``.
    """
    value = text.strip()
    if "=" in value:
        label, _, value = value.partition("=")
        if label.strip().lower() not in ("sha256 fingerprint", "sha256"):
            return None
    value = re.sub(r"^sha-?256:", "", value.strip(), flags=re.IGNORECASE)
    digits = re.sub(r"[:\s]", "", value)
    if not re.fullmatch(r"[0-9A-Fa-f]{64}", digits):
        return None
    return bytes.fromhex(digits).hex(":").upper()


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def _name_constraints(cert: x509.Certificate) -> x509.NameConstraints | None:
    """The certificate's NameConstraints extension, or None when it has none."""
    try:
        return cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return None


def is_name_constrained(certs_dir: Path) -> bool:
    """True when the CA in certs_dir restricts DNS names (False e.g. for mitmproxy's own CA)."""
    constraints = _name_constraints(_load_ca_cert(Path(certs_dir)))
    return constraints is not None and _dns_subtrees(constraints.permitted_subtrees) is not None


def uncovered_hosts(certs_dir: Path, hosts: Iterable[str]) -> list[str]:
    """Configured provider hosts that the existing CA's name constraints do not permit.

    Same RFC 5280 rules OpenSSL applies: a constraint "example.com" permits example.com and any
    subdomain, ".example.com" only subdomains; a "*.domain" host needs every subdomain permitted.
    Hosts are reported as given, in order, without duplicates; [] when all fit (also for a CA
    without DNS constraints, which permits everything: see is_name_constrained).
    Raises CAError when there is no readable CA or a host pattern is invalid.
    """
    constraints = _name_constraints(_load_ca_cert(Path(certs_dir)))
    missing: list[str] = []
    for host in hosts:
        name = _normalize_host(host)
        covered = constraints is None or _host_permitted(name, constraints)
        if not covered and host not in missing:
            missing.append(host)
    return missing


def reissue_hint(certs_dir: Path) -> str:
    """One sentence telling the admin how to replace a CA that no longer fits the providers."""
    certs_dir = Path(certs_dir)
    return (
        "Run `lmk ca init --force` to issue a new CA for the configured providers, restart the "
        f"gateway, then redistribute {certs_dir / CA_CERT_FILE} (or {certs_dir / BUNDLE_FILE}) "
        "to every client, because clients trusting the old CA will reject the new certificates."
    )


def ca_private_key_mode_ok(certs_dir: Path) -> bool:
    """True when mitmproxy-ca.pem exists and only its owner may read or write it (mode 0600)."""
    try:
        mode = os.stat(Path(certs_dir) / CA_KEY_FILE).st_mode
    except FileNotFoundError:
        return False
    return stat.S_IMODE(mode) == _SECRET_MODE


def ca_fingerprint(certs_dir: Path) -> str | None:
    """The `fingerprint` of the CA certificate in mitmproxy-ca.pem, the one mitmproxy signs
    with; None when there is no readable CA."""
    try:
        cert = _load_ca_cert(Path(certs_dir))
    except CAError:
        return None
    return fingerprint(cert)


def ca_problems(certs_dir: Path) -> list[str]:
    """What is wrong with the CA files, one sentence each naming the fix; [] when they are in
    order, and also when none exists yet (the proxy's first start creates them).

    Checked: the private key file is there, readable, holds a key that belongs to its
    certificate and is private (0600); the certificate clients install
    (mitmproxy-ca-cert.pem) is that certificate; the client bundle holds it. What CA a running
    proxy loaded is not known here (its own watcher compares with that).
    """
    certs_dir = Path(certs_dir)
    key_path, cert_path, bundle_path = (
        certs_dir / CA_KEY_FILE,
        certs_dir / CA_CERT_FILE,
        certs_dir / BUNDLE_FILE,
    )
    redistribute = f"redistribute {cert_path} (or {bundle_path}) to every client"
    if not key_path.exists():
        if not cert_path.exists() and not bundle_path.exists():
            return []  # not created yet
        return [
            f"{key_path} (the CA's private key) is missing while clients were given its "
            "certificate: the proxy's next start creates a new CA, which every client will "
            f"refuse. Restore the file from a backup, or run `lmk ca init --force` and "
            f"{redistribute}."
        ]
    try:
        cert, _ = _load_ca(certs_dir)
    except CAError as error:
        return [
            f"{error}. Restore the CA files from a backup, or run `lmk ca init --force` and "
            f"{redistribute}."
        ]
    problems: list[str] = []
    if not ca_private_key_mode_ok(certs_dir):
        problems.append(f"{key_path} can be read by others: `chmod 600 {key_path}`.")
    ours = cert.public_bytes(serialization.Encoding.PEM).strip()
    rewrite = "Run `lmk ca init` (it rewrites the file from the CA, which it keeps)"
    try:
        given = cert_path.read_bytes()
    except FileNotFoundError:
        problems.append(f"{cert_path} is missing, so `lmk env` cannot set up clients. {rewrite}.")
    except OSError as error:
        problems.append(f"cannot read {cert_path}: {error.strerror or error}.")
    else:
        if given.strip() != ours:
            problems.append(
                f"{cert_path} is not the CA in {key_path}: clients given it refuse the "
                f"proxy's certificates. {rewrite}, then {redistribute}; or restore both files."
            )
    try:
        bundle = bundle_path.read_bytes()
    except FileNotFoundError:
        problems.append(
            f"{bundle_path} is missing: clients whose SSL_CERT_FILE (or REQUESTS_CA_BUNDLE, ...) "
            f"names it fail every TLS connection. {rewrite}."
        )
    except OSError as error:
        problems.append(f"cannot read {bundle_path}: {error.strerror or error}.")
    else:
        if ours not in bundle:
            problems.append(
                f"{bundle_path} does not hold the CA in {key_path}: clients using it refuse "
                f"the proxy. {rewrite}."
            )
    return problems
