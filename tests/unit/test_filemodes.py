"""Files the gateway creates are 0600; an existing flow file is tightened, also when mitmdump
opened it before our script loaded."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy.addons import save

from llamakey import filemodes
from tests.unit.builders import mitm_context


@pytest.fixture
def shell_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("prefix", ["", "+"])
def test_an_existing_flow_file_is_made_0600(tmp_path: Path, prefix: str) -> None:
    flows = tmp_path / "flows.mitm"
    flows.write_bytes(b"")
    flows.chmod(0o644)
    filemodes.tighten(prefix + str(flows))
    assert mode(flows) == 0o600


def test_tighten_leaves_nothing_behind_for_a_missing_file(tmp_path: Path) -> None:
    filemodes.tighten(str(tmp_path / "absent"))
    filemodes.tighten(None)
    assert list(tmp_path.iterdir()) == []


async def test_save_file_opened_before_the_script_is_tightened(
    tmp_path: Path, shell_umask: None
) -> None:
    flows = tmp_path / "flows"
    saver = save.Save()
    with mitm_context(saver, filemodes.SaveFileMode()) as tctx:
        tctx.configure(saver, save_stream_file=str(flows))  # mitmproxy creates it 0644
        assert mode(flows) == 0o600


def test_restrict_umask(tmp_path: Path, shell_umask: None) -> None:
    filemodes.restrict_umask()
    (tmp_path / "new").write_bytes(b"x")
    assert mode(tmp_path / "new") == 0o600
