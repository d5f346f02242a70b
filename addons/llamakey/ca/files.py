"""The CA's files in the certs directory: their names and modes, writing them, loading the CA,
and the client bundle (the system roots plus our CA).

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

Every file is written atomically with its mode from creation on (`_write_atomic`): a secret is
never readable by others, not even for a moment, and readers (mitmproxy, clients) see the old
or the new file, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from llamakey.ca.errors import CAError

__all__ = [
    "BUNDLE_FILE",
    "CA_CERT_CER_FILE",
    "CA_CERT_FILE",
    "CA_CERT_P12_FILE",
    "CA_KEY_FILE",
    "CA_KEY_P12_FILE",
    "MAGISK_FILE",
    "SECRET_MODE",
    "PrivateKey",
    "client_bundle",
    "ensure_dir",
    "load_ca",
    "load_ca_cert",
    "tighten_secret_modes",
    "write_client_bundle",
    "write_public_files",
    "write_secret_files",
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
MAGISK_FILE = f"{_BASENAME}-magisk-module.zip"

SECRET_MODE = 0o600
_PUBLIC_MODE = 0o644
_DIR_MODE = 0o700

_SYSTEM_BUNDLE_FALLBACK = Path("/etc/ssl/certs/ca-certificates.crt")
_PEM_CERT_RE = re.compile(rb"-----BEGIN CERTIFICATE-----\s.+?-----END CERTIFICATE-----", re.DOTALL)

# The key types mitmproxy's CertStore accepts.
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


# --------------------------------------------------------------------------------------------
# Writing
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


def ensure_dir(certs_dir: Path) -> None:
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


def write_secret_files(certs_dir: Path, cert: x509.Certificate, key: PrivateKey) -> None:
    """Write mitmproxy-ca.pem (key + cert, the file mitmproxy loads) and its PKCS#12 twin, 0600."""
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomic(
        certs_dir / CA_KEY_FILE,
        key_pem + cert.public_bytes(serialization.Encoding.PEM),
        SECRET_MODE,
    )
    p12 = pkcs12.serialize_key_and_certificates(
        _BASENAME.encode(), key, cert, None, serialization.NoEncryption()
    )
    _write_atomic(certs_dir / CA_KEY_P12_FILE, p12, SECRET_MODE)


def write_public_files(certs_dir: Path, cert: x509.Certificate) -> None:
    """Write the certificate-only files clients install (PEM, .cer for Android, PKCS#12)."""
    pem = cert.public_bytes(serialization.Encoding.PEM)
    _write_atomic(certs_dir / CA_CERT_FILE, pem, _PUBLIC_MODE)
    _write_atomic(certs_dir / CA_CERT_CER_FILE, pem, _PUBLIC_MODE)
    p12 = pkcs12.serialize_key_and_certificates(
        _BASENAME.encode(), None, cert, None, serialization.NoEncryption()
    )
    _write_atomic(certs_dir / CA_CERT_P12_FILE, p12, _PUBLIC_MODE)


def tighten_secret_modes(certs_dir: Path) -> None:
    """Make existing key files 0600 again (e.g. after a copy with the wrong umask)."""
    for name in (CA_KEY_FILE, CA_KEY_P12_FILE):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(certs_dir / name, SECRET_MODE)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _read_ca_file(certs_dir: Path) -> bytes:
    """The bytes of mitmproxy-ca.pem; CAError when it is missing or unreadable."""
    path = certs_dir / CA_KEY_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CAError(f"no CA in {certs_dir} ({CA_KEY_FILE} missing): run `lmk ca init`") from None
    except OSError as e:
        raise CAError(f"cannot read {path}: {e}") from e


def load_ca(certs_dir: Path) -> tuple[x509.Certificate, PrivateKey]:
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


def load_ca_cert(certs_dir: Path) -> x509.Certificate:
    """The CA certificate from mitmproxy-ca.pem (what mitmproxy signs with)."""
    try:
        return x509.load_pem_x509_certificates(_read_ca_file(certs_dir))[0]
    except ValueError as e:
        raise CAError(f"no CA certificate in {certs_dir / CA_KEY_FILE}: {e}") from e


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
    ours = load_ca_cert(certs_dir).public_bytes(serialization.Encoding.PEM)
    _write_atomic(bundle, client_bundle(ours, bundle), _PUBLIC_MODE)
    return bundle
