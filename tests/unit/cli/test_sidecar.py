"""`lmk sidecar` refuses, before it listens, what would make it unsafe or useless: a key file
others may read, an address off loopback, credentials in the central proxy's URL, a central
CA that is no CA certificate, a JWT command that does not work."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from llamakey import ca, credentials
from llamakey.providers import BUILTIN_PROVIDERS
from tests.unit.cli.helpers import lmk_fails

KEY = credentials.new_master_key()


@pytest.fixture(scope="module")
def central_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    hosts = [h for p in BUILTIN_PROVIDERS.values() for h in p.hosts]
    return ca.init_ca(tmp_path_factory.mktemp("central-certs"), hosts)


def sidecar_fails(tmp_path: Path, central_ca: Path, *args: str) -> str:
    base = ["sidecar", "--central", "http://127.0.0.1:9", "--central-ca", str(central_ca)]
    base += ["--certs-dir", str(tmp_path / "sidecar-certs")]
    return lmk_fails(tmp_path / "unused.toml", *base, *args)


def key_file(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / "master.key"
    path.write_text(KEY + "\n")
    path.chmod(mode)
    return path


def test_a_key_file_others_may_read_is_refused(tmp_path: Path, central_ca: Path) -> None:
    path = key_file(tmp_path, 0o644)
    message = sidecar_fails(tmp_path, central_ca, "--key-file", str(path))
    assert message == f"lmk: {path} is mode 0644, not 0600: it holds a secret (chmod 600 {path})"
    assert not (tmp_path / "sidecar-certs").exists()  # nothing started, nothing written


@pytest.mark.parametrize("listen", ["0.0.0.0:8090", "10.0.0.5:8090", "example.com:8090", "8090"])
def test_the_sidecar_listens_on_loopback_only(
    tmp_path: Path, central_ca: Path, listen: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = key_file(tmp_path, 0o600)
    assert sidecar_fails(tmp_path, central_ca, "--key-file", str(path), "--listen", listen) == "2"
    assert f"--listen {listen!r}" in capsys.readouterr().err


def test_no_credentials_in_the_central_url(
    tmp_path: Path, central_ca: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = key_file(tmp_path, 0o600)
    central = f"http://alice:{KEY}@127.0.0.1:8080"
    args = ["--central", central, "--central-ca", str(central_ca), "--key-file", str(path)]
    assert lmk_fails(tmp_path / "unused.toml", "sidecar", *args) == "2"
    err = capsys.readouterr().err
    assert "--central takes no credentials: put the master key in a 0600 file" in err
    assert KEY not in err


def test_the_central_ca_must_be_a_ca_certificate(tmp_path: Path, central_ca: Path) -> None:
    path = key_file(tmp_path, 0o600)
    secret = central_ca.parent / ca.CA_KEY_FILE  # key + certificate: not what to hand out
    message = sidecar_fails(tmp_path, secret, "--key-file", str(path))
    expected = "a private key where a CA certificate was expected"
    assert message == f"lmk: --central-ca {secret}: {expected}"


def test_one_credential_source_is_required(
    tmp_path: Path, central_ca: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sidecar_fails(tmp_path, central_ca) == "2"
    assert "one of the arguments --key-file --jwt-command is required" in capsys.readouterr().err


def test_a_jwt_command_that_fails_is_said_at_start(tmp_path: Path, central_ca: Path) -> None:
    failing = f"{sys.executable} -c 'import sys; sys.exit(4)'"
    message = sidecar_fails(tmp_path, central_ca, "--jwt-command", failing)
    assert message.startswith("lmk: the JWT command ")
    assert message.endswith("exited with status 4")
