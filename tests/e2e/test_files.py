"""Every file the proxy creates is mode 0600: saved flows (`-w`), the audit database, the
upstream CA bundle, mitmproxy's own files; only the CA's public certificates and the client
bundle are 0644, as `ca/files.py` sets them. Also under plain `mitmdump -s addons/entry.py`, whose
forged leaves name exactly the requested host too."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from tests.conftest import make_gateway
from tests.e2e.raw_clients import call_openai, san_names, served_leaf
from tests.harness import REAL_KEYS, Gateway, free_port, mitmdump_command, wait_until
from tests.mock_upstream import MockUpstream

REPO = Path(__file__).resolve().parents[2]

#: What ca/files.py writes 0644 on purpose: clients install these.
PUBLIC = frozenset(
    {
        "mitmproxy-ca-cert.pem",
        "mitmproxy-ca-cert.cer",
        "mitmproxy-ca-cert.p12",
        "client-bundle.pem",
    }
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def proxy_made_files(workdir: Path, made_by_test: set[Path]) -> dict[str, int]:
    """Every file under workdir the proxy created, by relative path, with its mode."""
    return {
        str(path.relative_to(workdir)): mode(path)
        for path in sorted(workdir.rglob("*"))
        if path.is_file() and path not in made_by_test
    }


def assert_modes(files: dict[str, int], *expected: str, public: frozenset[str] = PUBLIC) -> None:
    for name in expected:
        assert name in files, f"{name} was not created: {sorted(files)}"
    for name, file_mode in files.items():
        want = 0o644 if Path(name).name in public else 0o600
        assert file_mode == want, f"{name} is {file_mode:o}, expected {want:o}"


def test_lmk_serve_creates_every_file_0600(tmp_path: Path, mock: MockUpstream) -> None:
    saved = tmp_path / "flows.mitm"
    gw = make_gateway(tmp_path, mock, extra_args=("-w", str(saved)))
    made_by_test = {p for p in tmp_path.rglob("*") if p.is_file()} | {gw.log}
    gw.start()
    try:
        assert call_openai(gw).status_code == 200
    finally:
        gw.stop()
    assert saved.stat().st_size > 0
    files = proxy_made_files(tmp_path, made_by_test)
    assert_modes(
        files,
        "flows.mitm",
        "audit.db",
        "certs/upstream-bundle.pem",
        "certs/mitmproxy-ca.pem",
        "certs/client-bundle.pem",
    )


def test_lmk_web_makes_an_existing_save_file_0600(tmp_path: Path, mock: MockUpstream) -> None:
    saved = tmp_path / "flows.mitm"
    saved.write_bytes(b"")
    os.chmod(saved, 0o644)
    gw = make_gateway(
        tmp_path,
        mock,
        command="web",
        proxy_table={"web_port": free_port()},
        extra_args=("-w", str(saved)),
    )
    gw.start()
    try:
        assert mode(saved) == 0o600  # before any flow is written to it
        assert call_openai(gw).status_code == 200
    finally:
        gw.stop()
    assert saved.stat().st_size > 0
    assert mode(saved) == 0o600
    assert mode(gw.audit_db) == 0o600


def test_plain_mitmdump_with_entry_script(tmp_path: Path, mock: MockUpstream) -> None:
    gw = make_gateway(tmp_path, mock)
    made_by_test = {p for p in tmp_path.rglob("*") if p.is_file()}
    port = gw.port  # proxy.listen_port: mitmdump listens where the config says
    log = tmp_path / "mitmdump.log"
    saved = tmp_path / "flows"
    made_by_test.add(log)
    with log.open("wb") as out:
        process = subprocess.Popen(
            mitmdump_command(gw, "--listen-host", "127.0.0.1", "-p", str(port), "-w", str(saved)),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=gw.environment(),
        )
    served = Gateway(workdir=tmp_path, upstream=mock.address, upstream_ca=mock.ca_pem_path)
    served.port, served.keys = port, gw.keys
    try:
        mock.clear()

        def answered() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return call_openai(served).status_code == 200
            except OSError:  # not listening, or the script not configured yet
                return False

        wait_until(answered, "mitmdump -s entry.py to serve", timeout=30)
        assert mock.seen[-1].header("authorization") == f"Bearer {REAL_KEYS['openai']}"
        leaf = served_leaf(port, "127.0.0.1:443", "api.openai.com")
        assert san_names(leaf) == ["api.openai.com"]
    finally:
        process.terminate()
        process.wait(10)
    assert saved.stat().st_size > 0
    # mitmproxy writes its public DH parameters before it loads any script (that is, with the
    # shell's umask); everything with a secret in it is 0600.
    files = proxy_made_files(tmp_path, made_by_test)
    public = PUBLIC | {"mitmproxy-dhparam.pem"}
    assert_modes(files, "flows", "audit.db", "certs/upstream-bundle.pem", public=public)
