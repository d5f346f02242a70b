"""Fixtures: a mock provider upstream (the only thing replaced), and real gateways before it."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote_to_bytes

import pytest
import trustme

from llamakey.providers import BUILTIN_PROVIDERS
from tests.harness import REAL_KEYS, Gateway
from tests.mock_upstream import MockUpstream, Seen

# Anything shaped like a master key (llamakey.credentials.MASTER_KEY_PATTERN, kept apart on
# purpose: the check must not follow the code it checks).
MASTER_KEY = re.compile(rb"(?:hf_)?lmk_[A-Za-z0-9_-]{16,}")


def _sni_serves(provider: str, sni: str | None) -> bool:
    """Whether TLS server name `sni` is one of `provider`'s own hosts."""
    if not sni:
        return False
    name = sni.lower().rstrip(".")
    for pattern in BUILTIN_PROVIDERS[provider].hosts:
        if pattern.startswith("*."):
            if name.endswith(pattern[1:]) and len(name) > len(pattern) - 1:
                return True
        elif name == pattern:
            return True
    return False


def key_problems(seen: Seen) -> list[str]:
    """What is wrong with one request a provider received: a master key anywhere in it, or a
    real key on a connection opened for another provider's host."""
    what = f"{seen.request_id} {seen.method} {seen.path!r} (Host {seen.host!r}, SNI {seen.sni!r})"
    parts: list[tuple[str, bytes]] = [
        (f"header {name}", f"{name}: {value}".encode("latin-1", "replace"))
        for name, value in seen.headers
    ]
    path = seen.path.encode("latin-1", "replace")
    parts.append(("path", path))
    if (decoded := unquote_to_bytes(path)) != path:
        parts.append(("percent-decoded path", decoded))
    parts.append(("body", seen.body))
    problems: list[str] = []
    if where := [w for w, blob in parts if MASTER_KEY.search(blob)]:
        problems.append(f"{what}: a master key in its {', '.join(where)}")
    for provider, key in REAL_KEYS.items():
        where = [w for w, blob in parts if key.encode() in blob]
        if where and not _sni_serves(provider, seen.sni):
            problems.append(
                f"{what}: {provider}'s real key in its {', '.join(where)}, on a connection "
                f"whose TLS server name is not a host of {provider}"
            )
    return problems


@pytest.fixture(scope="session", autouse=True)
def no_key_ever_went_astray() -> Iterator[None]:
    """After the whole session: every request any mock provider received carried no master key,
    and each real key only on a connection opened for its own provider's host."""
    yield
    problems = [p for m in MockUpstream.instances for s in m.all_seen for p in key_problems(s)]
    assert not problems, "requests that reached a provider wrongly:\n" + "\n".join(problems)


REPO = Path(__file__).resolve().parents[1]
# What a test run may add to the checkout: the tools' own caches.
_CACHES = re.compile(
    r"(^|/)(\.pytest_cache|__pycache__|\.mypy_cache|\.ruff_cache|[^/]*\.egg-info)/"
)


def checkout_status() -> set[str] | None:
    """`git status --porcelain --ignored` of the checkout the tests live in, cache directories
    left out; None when this is no git checkout (an unpacked sdist, say) or git is missing."""
    git = shutil.which("git")
    if git is None:
        return None
    try:
        top = subprocess.run(
            [git, "rev-parse", "--show-toplevel"], cwd=REPO, capture_output=True, text=True
        )
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != REPO:
            return None
        listed = subprocess.run(
            [git, "status", "--porcelain", "--ignored"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {line for line in listed.splitlines() if not _CACHES.search(line[3:] + "/")}


@pytest.fixture(scope="session", autouse=True)
def the_checkout_is_left_as_it_was() -> Iterator[None]:
    """After the whole session: no test wrote into the working tree (new files, ignored ones
    such as certs/ or *.db included, or changed tracked files). A test writes under tmp_path.

    Compared with the status before the run rather than asserted empty, so that uncommitted
    work in a checkout does not fail the suite; a fresh clone (CI) starts empty."""
    before = checkout_status()
    yield
    if before is None:
        return
    after = checkout_status()
    assert after is not None
    added = sorted(after - before)
    assert not added, "the tests left these in the working tree (git status):\n" + "\n".join(added)


@pytest.fixture(scope="session")
def upstream_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def mock(upstream_ca: trustme.CA) -> Iterator[MockUpstream]:
    server = MockUpstream(upstream_ca)
    server.start()
    yield server
    server.stop()


def make_gateway(tmp: Path, mock: MockUpstream, **kwargs: object) -> Gateway:
    gateway = Gateway(workdir=tmp, upstream=mock.address, upstream_ca=mock.ca_pem_path, **kwargs)  # type: ignore[arg-type]
    gateway.workdir.mkdir(parents=True, exist_ok=True)
    gateway.write_config()
    gateway.new_user("alice", "research")
    gateway.new_user("bob", "ops")
    return gateway


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream) -> Iterator[Gateway]:
    """The main gateway: tunnel mode, every provider keyed but vectara's missing."""
    gw = make_gateway(tmp_path_factory.mktemp("gateway"), mock, providers_without_keys=("vectara",))
    gw.start()
    yield gw
    gw.stop()
