"""What `lmk serve` says while it runs: a line per request (none with --quiet), what a reload
changed, and a CA whose files change under it."""

from __future__ import annotations

import re
import sqlite3
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_gateway
from tests.harness import REAL_KEYS, Gateway, run_lmk, wait_until
from tests.mock_upstream import MockUpstream

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
# [time][client] user provider model status in/out tok $cost latency
LINE = re.compile(
    r"^\[\d\d:\d\d:\d\d\.\d{3}\]\[127\.0\.0\.1:\d+\] alice openai gpt-4o-mini\S* 200 "
    r"\d+/\d+ tok \$\d+\.\d{6} \d+ ms$"
)
REFUSED = re.compile(
    r"^\[\d\d:\d\d:\d\d\.\d{3}\]\[127\.0\.0\.1:\d+\] - openai \S+ 401 "
    r"refused_by=unknown_master_key \d+ ms$"
)


def post(gateway: Gateway, key: str) -> httpx.Response:
    bundle = gateway.workdir / "certs" / "client-bundle.pem"
    with httpx.Client(
        proxy=f"http://127.0.0.1:{gateway.port}",
        timeout=30,
        verify=ssl.create_default_context(cafile=str(bundle)),
    ) as client:
        return client.post(
            "https://api.openai.com/v1/chat/completions",
            json=CHAT,
            headers={"authorization": f"Bearer {key}"},
        )


def new_lines(gateway: Gateway, offset: int) -> list[str]:
    return gateway.log.read_bytes()[offset:].decode("utf-8", "replace").splitlines()


def test_serve_prints_a_line_per_request(gateway: Gateway, mock: MockUpstream) -> None:
    offset = gateway.log.stat().st_size
    assert post(gateway, gateway.keys["alice"]).status_code == 200
    wait_until(lambda: any(LINE.match(line) for line in new_lines(gateway, offset)), "alice's line")
    assert post(gateway, "lmk_" + "Q" * 43).status_code == 401
    wait_until(
        lambda: any(REFUSED.match(line) for line in new_lines(gateway, offset)), "the refusal"
    )
    shown = "\n".join(new_lines(gateway, offset))
    for secret in (gateway.keys["alice"], gateway.keys["alice"][4:], REAL_KEYS["openai"]):
        assert secret not in shown


@pytest.fixture
def quiet(tmp_path: Path, mock: MockUpstream) -> Iterator[Gateway]:
    gw = make_gateway(tmp_path, mock, extra_args=("--quiet",))
    gw.start()
    yield gw
    gw.stop()


def test_quiet_serve_prints_no_request_line_but_says_reloads_and_ca_trouble(
    quiet: Gateway,
) -> None:
    assert post(quiet, quiet.keys["alice"]).status_code == 200
    # Its audit row is completed once the flow has ended, after the line would have been.
    db = quiet.audit_db
    wait_until(lambda: db.exists() and _completed(db) == 1, "the request's audit row")

    # A reload says what changed.
    result = run_lmk(quiet.config, "keys", "new", "carol")
    assert result.returncode == 0, result.stderr
    wait_until(lambda: "users added: carol" in quiet.log.read_text(), "the reload line")
    text = quiet.log.read_text()
    assert f"Configuration reloaded from {quiet.config.resolve()}: users added: carol" in text
    assert result.stdout.strip() not in text  # carol's new key

    # The client bundle disappears under the running proxy: an error within a poll or two.
    bundle = quiet.workdir / "certs" / "client-bundle.pem"
    bundle.unlink()
    wait_until(lambda: "changed under the running proxy" in quiet.log.read_text(), "the error")
    (error,) = [line for line in quiet.log.read_text().splitlines() if "under the run" in line]
    assert f"{bundle} is missing" in error and "`lmk ca init`" in error
    assert run_lmk(quiet.config, "ca", "init").returncode == 0
    wait_until(lambda: "are in order again" in quiet.log.read_text(), "the all-clear")

    assert not [line for line in quiet.log.read_text().splitlines() if " alice openai " in line]


def _completed(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        (count,) = conn.execute(
            "select count(*) from requests where completed_ts is not null"
        ).fetchone()
        return int(count)
