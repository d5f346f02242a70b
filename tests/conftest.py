"""Fixtures: a mock provider upstream (the only thing replaced), and real gateways before it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.harness import Gateway
from tests.mock_upstream import MockUpstream


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
