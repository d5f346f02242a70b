"""`lmk ca init`, and `lmk check` on the CA it made."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from llamakey import ca, config
from tests.unit.cli.helpers import lmk


def test_ca_init_creates_certs_with_private_key_0600(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = tmp_path / "certs"
    assert not certs.exists()
    assert lmk(cfg, "ca", "init") == 0
    out = capsys.readouterr().out
    assert str(certs / ca.CA_CERT_FILE) in out
    assert str(certs / ca.BUNDLE_FILE) in out
    assert stat.S_IMODE((certs / ca.CA_KEY_FILE).stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in (certs / ca.CA_KEY_FILE).read_bytes()
    assert b"PRIVATE KEY" not in (certs / ca.CA_CERT_FILE).read_bytes()
    assert b"PRIVATE KEY" not in (certs / ca.BUNDLE_FILE).read_bytes()
    assert stat.S_IMODE(certs.stat().st_mode) == 0o700
    assert ca.uncovered_hosts(certs, config.load(cfg).index.host_patterns()) == []

    # Idempotent: the same CA stays; check now reports it.
    cert = (certs / ca.CA_CERT_FILE).read_bytes()
    assert lmk(cfg, "ca", "init") == 0
    assert (certs / ca.CA_CERT_FILE).read_bytes() == cert
    capsys.readouterr()
    assert lmk(cfg, "check") == 0
    assert f"CA: {certs} (ok)" in capsys.readouterr().out


def test_check_says_when_the_ca_no_longer_fits_the_providers(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lmk(cfg, "ca", "init") == 0
    with cfg.open("a") as handle:
        handle.write('\n[providers.newco]\nhosts = ["api.newco.example"]\n')
    capsys.readouterr()
    assert lmk(cfg, "check") == 1
    out = capsys.readouterr().out
    assert "does not cover api.newco.example" in out
    assert "lmk ca init --force" in out
    assert lmk(cfg, "ca", "init", "--force") == 0
    capsys.readouterr()
    assert lmk(cfg, "check") == 0
    assert "(ok)" in capsys.readouterr().out
