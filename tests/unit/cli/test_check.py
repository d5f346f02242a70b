"""`lmk check`: a summary of a valid file, the TOML path of an error, never a key."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamakey import ca
from llamakey.providers import BUILTIN_PROVIDERS
from tests.jwks_server import SigningKey
from tests.unit.cli.helpers import lmk, lmk_fails, new_key


def test_check_summarises_a_valid_file(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = "sk-proj-CLIcheckKEY0123456789abcdefghij"
    monkeypatch.setenv("OPENAI_API_KEY", real)
    assert lmk(cfg, "check") == 0
    out = capsys.readouterr().out
    assert f"{cfg.resolve()}: valid" in out
    lines = out.splitlines()
    for name in BUILTIN_PROVIDERS:
        assert any(line.split()[:1] == [name] for line in lines), name
    (openai,) = [line for line in lines if line.split()[:1] == ["openai"]]
    assert "api.openai.com" in openai and "1 key(s)" in openai
    (groq,) = [line for line in lines if line.split()[:1] == ["groq"]]
    assert "NO KEY" in groq and "GROQ_API_KEY" in groq
    assert real not in out


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("listen_port = 8080", 'listen_port = "eighty"', ["proxy.listen_port", "'eighty'"]),
        ("retention_days = 0", "retention_days = 0\nbogus = 1", ["audit.bogus", "unknown key"]),
        ('other_hosts = "tunnel"', 'other_hosts = "deny"', ["proxy.other_hosts", "'deny'"]),
        ("[users]", "[users]\nalice = 3", ["users.alice"]),
        ("[proxy]", "[proxy", ["not valid TOML"]),
    ],
)
def test_check_broken_file_fails_naming_the_toml_path(
    cfg: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, expected: list[str]
) -> None:
    text = cfg.read_text(encoding="utf-8")
    assert old in text
    cfg.write_text(text.replace(old, new, 1), encoding="utf-8")
    message = lmk_fails(cfg, "check")
    assert str(cfg) in message
    for part in expected:
        assert part in message
    assert "valid\n" not in capsys.readouterr().out


def test_check_never_prints_a_master_key_pasted_as_provider_key(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = new_key(cfg, capsys, "alice")
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text.replace('keys = ["${OPENAI_API_KEY}"]', f'keys = ["{key}"]'), "utf-8")
    assert lmk(cfg, "check") == 0
    out = capsys.readouterr().out
    assert "master key" in out
    assert key not in out


# A key written into the file


def test_check_warns_of_a_literal_key_naming_its_toml_path_never_its_value(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    literal = "sk-proj-LITERALinTHEfile0123456789abcdef"
    text = cfg.read_text(encoding="utf-8")
    old = 'keys = ["${ANTHROPIC_API_KEY}"]'
    assert old in text
    text = text.replace(old, f'keys = ["${{ANTHROPIC_API_KEY}}", "{literal}"]')
    cfg.write_text(text, encoding="utf-8")
    assert lmk(cfg, "check") == 0  # a warning: the file is valid, and the key works
    captured = capsys.readouterr()
    (warning,) = [line for line in captured.out.splitlines() if line.startswith("warning:")]
    assert f"providers.anthropic.keys[1] in {cfg.resolve()} is a literal key" in warning
    assert 'keys = ["${ANTHROPIC_API_KEY}"]' in warning
    assert literal not in captured.out + captured.err
    assert literal[-6:] not in captured.out + captured.err


def test_check_says_nothing_of_references(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert lmk(cfg, "check") == 0
    assert "warning" not in capsys.readouterr().out


# The CA


def ca_made(cfg: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert lmk(cfg, "ca", "init") == 0
    capsys.readouterr()
    return cfg.parent / "certs"


def check_ca(cfg: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    status = lmk(cfg, "check")
    out = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(out) if line.startswith("CA: "))
    return status, out[start:]


def test_check_reports_a_missing_ca_key_that_clients_were_given(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = ca_made(cfg, capsys)
    (certs / ca.CA_KEY_FILE).unlink()
    status, lines = check_ca(cfg, capsys)
    assert status == 1
    assert lines[0] == f"CA: {certs} (BROKEN)"
    assert f"{certs / ca.CA_KEY_FILE} (the CA's private key) is missing" in lines[1]
    assert "lmk ca init --force" in lines[1] and "Restore the file" in lines[1]


def test_check_reports_a_key_that_does_not_belong_to_the_certificate(
    cfg: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    certs = ca_made(cfg, capsys)
    other = tmp_path / "other"
    ca.init_ca(other, ["api.openai.com"])
    key_file = (certs / ca.CA_KEY_FILE).read_bytes()
    cert_pem = key_file[key_file.index(b"-----BEGIN CERTIFICATE-----") :]
    other_key = (other / ca.CA_KEY_FILE).read_bytes()
    other_key = other_key[: other_key.index(b"-----BEGIN CERTIFICATE-----")]
    (certs / ca.CA_KEY_FILE).write_bytes(other_key + cert_pem)
    status, lines = check_ca(cfg, capsys)
    assert status == 1
    assert "the private key does not belong to the certificate" in lines[1]


def test_check_reports_a_client_certificate_that_is_another_ca(
    cfg: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    certs = ca_made(cfg, capsys)
    other = tmp_path / "other"
    ca.init_ca(other, ["api.openai.com"])
    (certs / ca.CA_CERT_FILE).write_bytes((other / ca.CA_CERT_FILE).read_bytes())
    status, lines = check_ca(cfg, capsys)
    assert status == 1
    assert f"{certs / ca.CA_CERT_FILE} is not the CA in {certs / ca.CA_KEY_FILE}" in lines[1]
    assert lmk(cfg, "ca", "init") == 0  # the fix it names
    capsys.readouterr()
    assert check_ca(cfg, capsys) == (0, [f"CA: {certs} (ok)"])


@pytest.mark.parametrize("broken", ["missing", "without our CA"])
def test_check_reports_a_client_bundle_without_the_ca(
    cfg: Path, capsys: pytest.CaptureFixture[str], broken: str
) -> None:
    certs = ca_made(cfg, capsys)
    bundle = certs / ca.BUNDLE_FILE
    if broken == "missing":
        bundle.unlink()
    else:
        text = bundle.read_bytes()
        bundle.write_bytes(text[: text.index(b"# LlaMaKey CA")])
    status, lines = check_ca(cfg, capsys)
    assert status == 1
    expected = "is missing" if broken == "missing" else "does not hold the CA"
    assert f"{bundle} {expected}" in lines[1]
    assert "`lmk ca init`" in lines[1]


def test_check_reports_a_ca_key_others_can_read(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = ca_made(cfg, capsys)
    (certs / ca.CA_KEY_FILE).chmod(0o644)
    status, lines = check_ca(cfg, capsys)
    assert status == 1
    assert f"chmod 600 {certs / ca.CA_KEY_FILE}" in lines[1]


def test_check_names_each_trace_destination_never_its_headers(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert lmk(cfg, "check") == 0
    assert "traces: off" in capsys.readouterr().out.splitlines()
    secret = "Basic cGstbGYtMTIzOnNrLWxmLTQ1Ng=="
    monkeypatch.setenv("LMK_UT_TRACE_AUTH", secret)
    monkeypatch.delenv("LMK_UT_TRACE_UNSET", raising=False)
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(
        text.replace(
            "[users]",
            '[traces]\nenabled = true\nendpoint = "http://127.0.0.1:4318/v1/traces"\n'
            "[traces.destinations.research]\n"
            'endpoint = "https://otel.example/v1/traces"\n'
            'headers = { Authorization = "${LMK_UT_TRACE_AUTH}" }\n'
            "[traces.destinations.ops]\n"
            'endpoint = "https://ops.example/v1/traces"\n'
            'headers = { Authorization = "${LMK_UT_TRACE_UNSET}" }\n\n[users]',
            1,
        ),
        encoding="utf-8",
    )
    assert lmk(cfg, "check") == 0
    out = capsys.readouterr().out
    assert (
        "traces: default http://127.0.0.1:4318/v1/traces; ops https://ops.example/v1/traces "
        "(NO SPANS: traces.destinations.ops.headers.Authorization (LMK_UT_TRACE_UNSET): not set "
        "in the proxy's environment); research https://otel.example/v1/traces"
    ) in out.splitlines()
    assert secret not in out


def test_check_summarises_the_jwt_table_and_refuses_a_bad_key_file(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jwt = (
        '\n[jwt]\nissuer = "https://login.example/v2.0"\naudience = ["api://lmk"]\n'
        'algorithms = ["ES256"]\npublic_key_file = "idp.pem"\nunknown_identity = "research"\n'
    )
    cfg.write_text(cfg.read_text() + jwt)
    (cfg.parent / "idp.pem").write_text("not a key")
    error = lmk_fails(cfg, "check")
    assert "jwt.public_key_file" in error and "not a PEM public key" in error
    (cfg.parent / "idp.pem").write_bytes(SigningKey.ec("k").public_pem())
    assert lmk(cfg, "check") == 0
    out = capsys.readouterr().out
    assert (
        "jwt: issuer https://login.example/v2.0, audience api://lmk, ES256 keys from idp.pem "
        "(PEM); 0 user(s) by sub, other identities group research" in out
    )


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("http://idp.example/keys", True),  # anyone on the path serves keys of their own
        ("http://10.0.0.7:8080/keys", True),
        ("https://idp.example/keys", False),
        ("http://127.0.0.1:5556/keys", False),  # loopback: no network in between
        ("http://[::1]:5556/keys", False),
        ("http://localhost/keys", False),
    ],
)
def test_check_warns_of_a_jwks_url_in_plain_http_off_loopback(
    cfg: Path, capsys: pytest.CaptureFixture[str], url: str, warned: bool
) -> None:
    jwt = (
        '\n[jwt]\nissuer = "https://login.example/v2.0"\naudience = ["api://lmk"]\n'
        f'algorithms = ["RS256"]\njwks_url = "{url}"\n'
    )
    cfg.write_text(cfg.read_text() + jwt)
    assert lmk(cfg, "check") == 0  # valid: a warning, as for a literal key
    warnings = [line for line in capsys.readouterr().out.splitlines() if "warning:" in line]
    if not warned:
        assert warnings == []
        return
    (warning,) = warnings
    assert f"jwt.jwks_url in {cfg.resolve()} is plain http://" in warning
    assert "forge a token for any identity" in warning and "https://" in warning


def test_check_lists_each_catalogued_model_and_its_deployments(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = "azure-CLIcheckKEY0123456789abcdefghij"
    monkeypatch.setenv("LMK_UT_EAST", real)
    catalogue = """
[models.pool]
aliases = ["fast"]
[[models.pool.deployments]]
name = "east"
kind = "azure"
endpoint = "https://myres.openai.azure.com"
deployment = "gpt4o-east"
api_version = "2024-10-21"
keys = ["${LMK_UT_EAST}"]
weight = 2
[[models.pool.deployments]]
name = "west"
kind = "openai_compatible"
base_url = "https://api.groq.com/openai/v1"
keys = ["${LMK_UT_WEST_UNSET}"]
"""
    cfg.write_text(cfg.read_text(encoding="utf-8") + catalogue, encoding="utf-8")
    assert lmk(cfg, "check") == 0
    out = capsys.readouterr().out
    assert "model pool, fast:\n" in out
    assert "  east         azure myres.openai.azure.com, weight 2: 1 key(s)\n" in out
    assert "west         openai_compatible api.groq.com, weight 1: NO KEY (" in out
    assert "LMK_UT_WEST_UNSET" in out and real not in out
