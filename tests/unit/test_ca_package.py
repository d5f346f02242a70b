"""The ca package's public names and layers, and the client environment's place below the CLI
and the steps (a step never imports `llamakey.cli`)."""

from __future__ import annotations

from pathlib import Path

import llamakey
from llamakey import ca, clientenv
from llamakey.ca import checks, constraints, errors, files, fingerprints, issue
from tests.unit.config.test_package import llamakey_imports

ADDONS = Path(llamakey.__file__).parent

# The public surface of the former single module `llamakey/ca.py`.
PUBLIC = {
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
}


def test_the_package_re_exports_the_whole_former_module() -> None:
    assert set(ca.__all__) == PUBLIC
    assert ca.CAError is errors.CAError
    assert ca.init_ca is issue.init_ca
    assert ca.permitted_names is constraints.permitted_names
    assert ca.client_bundle is files.client_bundle
    assert ca.fingerprint is fingerprints.fingerprint
    assert ca.ca_problems is checks.ca_problems
    for name in PUBLIC:
        value = getattr(ca, name)
        if callable(value):  # defined in one of the modules, not in the package itself
            assert value.__module__.startswith("llamakey.ca."), name


def test_ca_imports_nothing_else_of_llamakey() -> None:
    for module in sorted((ADDONS / "ca").glob("*.py")):
        for name in llamakey_imports(module):
            assert name.startswith("llamakey.ca"), f"ca/{module.name} imports {name}"


def test_no_step_and_not_clientenv_imports_the_cli() -> None:
    for module in [*sorted((ADDONS / "steps").glob("*.py")), Path(clientenv.__file__)]:
        for name in llamakey_imports(module):
            is_cli = name == "llamakey.cli" or name.startswith("llamakey.cli.")
            assert not is_cli, f"{module.name} imports {name}"
