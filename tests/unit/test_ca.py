"""Tests for llamakey.ca: our name-constrained CA, checked with real OpenSSL verification.

Leaves are issued by mitmproxy's own CertStore (exactly what the gateway does), served by a real
loopback TLS server and verified by a client context that trusts only our CA.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mitmproxy import certs

from llamakey import ca
from llamakey.ca import (
    CAError,
    ca_private_key_mode_ok,
    init_ca,
    is_name_constrained,
    permitted_names,
    reissue_hint,
    uncovered_hosts,
    write_client_bundle,
)

HOSTS = [
    "api.openai.com",
    "*.openai.azure.com",
    "api.anthropic.com",
    "generativelanguage.googleapis.com",
]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _ca_cert(certs_dir: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate((certs_dir / ca.CA_CERT_FILE).read_bytes())


def _dns(*names: str) -> list[x509.GeneralName]:
    return [x509.DNSName(n) for n in names]


def _serve_once(server: ssl.SSLContext, listener: socket.socket) -> None:
    """Accept one connection and run the server side of the handshake; failures are expected."""
    try:
        conn, _ = listener.accept()
    except OSError:
        return
    with conn:
        conn.settimeout(5)
        try:
            with server.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)  # wait for the client to close after its handshake
        except (ssl.SSLError, OSError):
            pass


def tls_connect(entry: certs.CertStoreEntry, host: str, cafile: Path, tmp_path: Path) -> None:
    """Serve ``entry`` on loopback and connect with a client trusting only ``cafile``.

    Returns when the handshake (chain + name constraints + hostname) verifies; raises
    ssl.SSLCertVerificationError otherwise.
    """
    leaf_file = tmp_path / "leaf.pem"
    key_file = tmp_path / "leaf.key"
    leaf_file.write_bytes(entry.cert.to_pem())
    key_file.write_bytes(
        entry.privatekey.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(leaf_file, key_file)

    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
    client.load_verify_locations(cafile=cafile)

    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(5)
        thread = threading.Thread(target=_serve_once, args=(server, listener), daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(listener.getsockname(), timeout=5) as raw,
                client.wrap_socket(raw, server_hostname=host),
            ):
                pass
        finally:
            thread.join(timeout=5)


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    certs_dir = tmp_path_factory.mktemp("lmk") / "certs"
    init_ca(certs_dir, HOSTS)
    return certs_dir


@pytest.fixture(scope="module")
def store(ca_dir: Path) -> certs.CertStore:
    # Exactly what mitmproxy's TlsConfig does with confdir = ca_dir.
    return certs.CertStore.from_store(str(ca_dir), "mitmproxy", 2048)


@pytest.fixture
def umask_zero() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# ---------------------------------------------------------------------------------------------
# permitted_names
# ---------------------------------------------------------------------------------------------


def test_permitted_names_converts_wildcards_sorts_and_dedupes() -> None:
    assert permitted_names([*HOSTS, "API.OpenAI.com.", "*.openai.azure.com"]) == [
        ".openai.azure.com",
        "api.anthropic.com",
        "api.openai.com",
        "generativelanguage.googleapis.com",
    ]


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "*",
        "*.com",
        "127.0.0.1",
        "::1",
        "api.openai.com:443",
        "a*.openai.com",
        "x.*.com",
        "bücher.de",
        "a..b.com",
        "-bad.com",
    ],
)
def test_permitted_names_rejects_unconstrainable_patterns(bad: str) -> None:
    with pytest.raises(CAError):
        permitted_names([bad])


# ---------------------------------------------------------------------------------------------
# init_ca: files, modes, idempotency
# ---------------------------------------------------------------------------------------------


def test_init_ca_writes_files_with_safe_modes(tmp_path: Path) -> None:
    certs_dir = tmp_path / "new" / "certs"
    cert_path = init_ca(certs_dir, HOSTS)

    assert cert_path == certs_dir / "mitmproxy-ca-cert.pem"
    assert _mode(certs_dir) == 0o700
    assert _mode(certs_dir / "mitmproxy-ca.pem") == 0o600
    assert _mode(certs_dir / "mitmproxy-ca.p12") == 0o600
    for public in (
        "mitmproxy-ca-cert.pem",
        "mitmproxy-ca-cert.cer",
        "mitmproxy-ca-cert.p12",
        "client-bundle.pem",
    ):
        assert _mode(certs_dir / public) == 0o644, public
    assert ca_private_key_mode_ok(certs_dir)
    # No temp files left behind.
    assert not [p for p in certs_dir.iterdir() if p.name.endswith(".tmp")]

    raw = (certs_dir / "mitmproxy-ca.pem").read_bytes()
    assert b"PRIVATE KEY" in raw
    assert b"PRIVATE KEY" not in cert_path.read_bytes()
    assert (certs_dir / "mitmproxy-ca-cert.cer").read_bytes() == cert_path.read_bytes()


def test_key_files_are_created_0600_not_chmodded_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_zero: None
) -> None:
    """With umask 0 a plain open() would create 0666 files; we create key files 0600 directly."""
    created: list[tuple[str, int]] = []
    real_open = os.open

    def spy_open(path: str | os.PathLike[str], flags: int, mode: int = 0o777) -> int:
        if flags & os.O_CREAT:
            created.append((os.fspath(path), mode))
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", spy_open)
    init_ca(tmp_path / "certs", HOSTS)
    monkeypatch.undo()

    secret = [
        m for p, m in created if Path(p).name.startswith((".mitmproxy-ca.pem", ".mitmproxy-ca.p12"))
    ]
    assert len(secret) == 2
    assert all(m == 0o600 for m in secret)
    assert _mode(tmp_path / "certs") == 0o700
    assert _mode(tmp_path / "certs" / "mitmproxy-ca.pem") == 0o600
    assert _mode(tmp_path / "certs" / "mitmproxy-ca-cert.pem") == 0o644


def test_ca_certificate_profile(ca_dir: Path) -> None:
    cert = _ca_cert(ca_dir)
    assert cert.subject.rfc4514_string() == "O=LlaMaKey,CN=LlaMaKey CA"
    assert cert.issuer == cert.subject
    validity = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 3650 <= validity.days <= 3653

    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert ku.value.digital_signature and not ku.value.key_encipherment
    nc = cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    assert nc.value.permitted_subtrees == [x509.DNSName(n) for n in permitted_names(HOSTS)]
    assert nc.value.excluded_subtrees == [
        x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
        x509.IPAddress(ipaddress.ip_network("::/0")),
    ]
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert is_name_constrained(ca_dir)


def test_init_ca_is_idempotent_and_force_replaces(tmp_path: Path) -> None:
    certs_dir = tmp_path / "certs"
    init_ca(certs_dir, HOSTS)
    first = _ca_cert(certs_dir).serial_number
    key_pem = (certs_dir / "mitmproxy-ca.pem").read_bytes()

    # Kept, even with other hosts: replacing a CA is an explicit decision (force).
    init_ca(certs_dir, ["api.mistral.ai"])
    assert _ca_cert(certs_dir).serial_number == first
    assert (certs_dir / "mitmproxy-ca.pem").read_bytes() == key_pem

    (certs_dir / "mitmproxy-magisk-module.zip").write_bytes(b"stale module of the old CA")
    init_ca(certs_dir, [*HOSTS, "api.mistral.ai"], force=True)
    new = _ca_cert(certs_dir)
    assert new.serial_number != first
    assert (certs_dir / "mitmproxy-ca.pem").read_bytes() != key_pem
    assert not (certs_dir / "mitmproxy-magisk-module.zip").exists()
    # Every derived file follows the new CA.
    assert x509.load_pem_x509_certificates((certs_dir / "mitmproxy-ca.pem").read_bytes())[0] == new
    assert (
        new.public_bytes(serialization.Encoding.PEM)
        in (certs_dir / "client-bundle.pem").read_bytes()
    )
    assert uncovered_hosts(certs_dir, ["api.mistral.ai"]) == []


def test_init_ca_restores_public_files_and_key_mode(tmp_path: Path) -> None:
    certs_dir = tmp_path / "certs"
    init_ca(certs_dir, HOSTS)
    serial = _ca_cert(certs_dir).serial_number
    (certs_dir / "mitmproxy-ca-cert.pem").unlink()
    os.chmod(certs_dir / "mitmproxy-ca.pem", 0o644)
    assert not ca_private_key_mode_ok(certs_dir)

    init_ca(certs_dir, HOSTS)
    assert _ca_cert(certs_dir).serial_number == serial
    assert ca_private_key_mode_ok(certs_dir)


def test_ca_private_key_mode_ok(tmp_path: Path) -> None:
    assert not ca_private_key_mode_ok(tmp_path)  # no CA at all
    init_ca(tmp_path, HOSTS)
    assert ca_private_key_mode_ok(tmp_path)
    os.chmod(tmp_path / "mitmproxy-ca.pem", 0o640)
    assert not ca_private_key_mode_ok(tmp_path)


def test_errors(tmp_path: Path, ca_dir: Path) -> None:
    with pytest.raises(CAError):
        init_ca(tmp_path / "certs", [])
    with pytest.raises(CAError, match="lmk ca init"):
        uncovered_hosts(tmp_path, HOSTS)
    with pytest.raises(CAError):
        write_client_bundle(tmp_path)

    # Key of one CA with the certificate of another: refuse rather than hand it to mitmproxy.
    other = tmp_path / "other"
    init_ca(other, HOSTS, force=True)
    raw = (other / "mitmproxy-ca.pem").read_bytes()
    key_part = raw[: raw.index(b"-----BEGIN CERTIFICATE-----")]
    (other / "mitmproxy-ca.pem").write_bytes(
        key_part + (ca_dir / "mitmproxy-ca-cert.pem").read_bytes()
    )
    with pytest.raises(CAError, match="does not belong"):
        init_ca(other, HOSTS)


# ---------------------------------------------------------------------------------------------
# mitmproxy CertStore + OpenSSL verification
# ---------------------------------------------------------------------------------------------


def test_certstore_loads_our_ca(ca_dir: Path, store: certs.CertStore) -> None:
    ours = _ca_cert(ca_dir)
    assert store.default_ca.to_cryptography() == ours
    assert store.default_privatekey.public_key() == ours.public_key()
    entry = store.get_cert("api.openai.com", _dns("api.openai.com"))
    assert entry.cert.to_cryptography().issuer == ours.subject
    # mitmproxy did not replace our CA with one of its own.
    assert _ca_cert(ca_dir) == ours


@pytest.mark.parametrize(
    "host",
    [
        "api.openai.com",
        "myres.openai.azure.com",
        "api.anthropic.com",
        "generativelanguage.googleapis.com",
    ],
)
def test_leaf_for_allowed_host_verifies(
    host: str, ca_dir: Path, store: certs.CertStore, tmp_path: Path
) -> None:
    entry = store.get_cert(host, _dns(host))
    tls_connect(entry, host, ca_dir / "mitmproxy-ca-cert.pem", tmp_path)


_IP = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]


@pytest.mark.parametrize(
    ("host", "cn", "sans", "violation"),
    [
        ("example.com", "example.com", _dns("example.com"), "permitted subtree violation"),
        (
            "evil.openai.com.attacker.net",
            "evil.openai.com.attacker.net",
            _dns("evil.openai.com.attacker.net"),
            "permitted subtree violation",
        ),
        # ".openai.azure.com" permits sub-domains only.
        ("openai.azure.com", "openai.azure.com", _dns("openai.azure.com"), "subtree violation"),
        # mitmproxy's own form for an IP (CN 127.0.0.1 + IP SAN) ...
        ("127.0.0.1", "127.0.0.1", _IP, "subtree violation"),
        # ... and an attacker's (IP SAN, no CN): only the IP exclusion stops this one.
        ("127.0.0.1", None, _IP, "excluded subtree violation"),
        # What mitmproxy's upstream_cert=true would produce: the real cert's extra SANs ride
        # along, and one name outside the constraints sinks the whole leaf.
        (
            "api.openai.com",
            "api.openai.com",
            _dns("api.openai.com", "*.openai.com"),
            "permitted subtree violation",
        ),
    ],
)
def test_leaf_outside_constraints_fails(
    host: str,
    cn: str | None,
    sans: list[x509.GeneralName],
    violation: str,
    ca_dir: Path,
    store: certs.CertStore,
    tmp_path: Path,
) -> None:
    entry = store.get_cert(cn, sans)
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        tls_connect(entry, host, ca_dir / "mitmproxy-ca-cert.pem", tmp_path)
    assert violation in (info.value.verify_message or str(info.value))


def test_unconstrained_ca_control(tmp_path: Path) -> None:
    """The harness accepts example.com from mitmproxy's own CA: the failures above are the
    name constraints' doing, and is_name_constrained tells such a CA apart."""
    plain = tmp_path / "plain"
    store = certs.CertStore.from_store(str(plain), "mitmproxy", 2048)
    entry = store.get_cert("example.com", _dns("example.com"))
    tls_connect(entry, "example.com", plain / "mitmproxy-ca-cert.pem", tmp_path)
    assert not is_name_constrained(plain)
    assert uncovered_hosts(plain, ["example.com"]) == []


# ---------------------------------------------------------------------------------------------
# uncovered_hosts
# ---------------------------------------------------------------------------------------------


def test_uncovered_hosts_for_own_hosts_is_empty(ca_dir: Path) -> None:
    assert uncovered_hosts(ca_dir, HOSTS) == []


def test_uncovered_hosts_reports_new_provider(ca_dir: Path) -> None:
    assert uncovered_hosts(ca_dir, [*HOSTS, "api.mistral.ai", "api.mistral.ai"]) == [
        "api.mistral.ai"
    ]
    hint = reissue_hint(ca_dir)
    assert "lmk ca init --force" in hint
    assert str(ca_dir / "mitmproxy-ca-cert.pem") in hint
    assert "client-bundle.pem" in hint


@pytest.mark.parametrize(
    ("host", "covered"),
    [
        ("api.openai.com", True),
        ("API.OpenAI.com.", True),
        ("*.api.openai.com", True),  # "api.openai.com" permits every subdomain
        ("openai.com", False),
        ("*.openai.com", False),
        ("openai.azure.com", False),  # ".openai.azure.com": subdomains only
        ("*.openai.azure.com", True),
        ("*.x.openai.azure.com", True),
        ("*.azure.com", False),
        ("xopenai.azure.com", False),  # label-aligned, not a plain suffix match
        ("googleapis.com", False),
    ],
)
def test_uncovered_hosts_subdomain_rules(ca_dir: Path, host: str, covered: bool) -> None:
    assert uncovered_hosts(ca_dir, [host]) == ([] if covered else [host])


@pytest.mark.parametrize(
    "host",
    [
        "api.openai.com",
        "v2.api.openai.com",
        "openai.com",
        "openai.azure.com",
        "myres.openai.azure.com",
        "a.b.openai.azure.com",
        "xopenai.azure.com",
        "api.openai.com.evil.net",
        "xapi.anthropic.com",
        "api.mistral.ai",
    ],
)
def test_uncovered_hosts_agrees_with_openssl(
    host: str, ca_dir: Path, store: certs.CertStore, tmp_path: Path
) -> None:
    entry = store.get_cert(host, _dns(host))
    try:
        tls_connect(entry, host, ca_dir / "mitmproxy-ca-cert.pem", tmp_path)
        verified = True
    except ssl.SSLCertVerificationError:
        verified = False
    assert verified == (uncovered_hosts(ca_dir, [host]) == [])


# ---------------------------------------------------------------------------------------------
# client bundle
# ---------------------------------------------------------------------------------------------


def _common_name(subject: Any) -> str | None:
    """CN of a subject as ssl's get_ca_certs() returns it: ((("commonName", "x"),), ...)."""
    return next((v for rdn in subject for k, v in rdn if k == "commonName"), None)


def _pem_count(data: bytes) -> int:
    # Counted as text: some system roots carry serials cryptography warns about (and will reject).
    return data.count(b"-----BEGIN CERTIFICATE-----")


def test_client_bundle_has_system_roots_and_our_ca(
    ca_dir: Path, store: certs.CertStore, tmp_path: Path
) -> None:
    bundle = ca_dir / "client-bundle.pem"
    data = bundle.read_bytes()
    ours = (ca_dir / "mitmproxy-ca-cert.pem").read_bytes()
    assert data.count(ours) == 1
    assert _pem_count(data) > 1
    # OpenSSL reads every certificate of the file as a trust anchor, ours and the system's.
    ctx = ssl.create_default_context(cafile=str(bundle))
    common_names = [_common_name(anchor["subject"]) for anchor in ctx.get_ca_certs()]
    assert common_names.count("LlaMaKey CA") == 1
    assert len(common_names) > 1
    entry = store.get_cert("api.anthropic.com", _dns("api.anthropic.com"))
    tls_connect(entry, "api.anthropic.com", bundle, tmp_path)


def test_client_bundle_does_not_include_itself(
    ca_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shell with SSL_CERT_FILE=client-bundle.pem must not make the bundle grow per run."""
    bundle = ca_dir / "client-bundle.pem"
    before = _pem_count(bundle.read_bytes())
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    assert ssl.get_default_verify_paths().cafile == str(bundle)
    write_client_bundle(ca_dir)
    write_client_bundle(ca_dir)
    after = bundle.read_bytes()
    assert _pem_count(after) == before
    assert after.count((ca_dir / "mitmproxy-ca-cert.pem").read_bytes()) == 1
