"""No real provider key and no master key appears in mitmweb's flow API (in flight or after),
a saved flow file, or the proxy's logs; also through plain `mitmdump -s addons/entry.py`."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_gateway
from tests.harness import REAL_KEYS, Gateway, free_port, mitmdump_command, run_client
from tests.mock_upstream import MockUpstream

REPO = Path(__file__).resolve().parents[2]

CALLS = """
import os, subprocess
from openai import OpenAI
import anthropic
OpenAI().chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
anthropic.Anthropic().messages.create(model="claude-3-5-haiku-latest", max_tokens=8,
                                      messages=[{"role": "user", "content": "hi"}])
url = ("https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent?key="
       + os.environ["GOOGLE_API_KEY"])
subprocess.run(["curl", "-sS", "-d", '{"contents":[{"parts":[{"text":"hi"}]}]}', url], check=True,
               capture_output=True)
try:
    OpenAI(api_key="lmk_" + "Z" * 43).models.list()
except Exception:
    pass
"""

STREAM = """
from openai import OpenAI
for _ in OpenAI().chat.completions.create(model="gpt-4o-mini", stream=True,
        messages=[{"role": "user", "content": "hi"}], extra_headers={"x-mock-chunks": "30"}):
    pass
"""


def secrets_in(blob: bytes, gateway: Gateway) -> list[str]:
    """Which secrets (real keys, master keys, even without their prefix) occur in blob."""
    found = [name for name, key in REAL_KEYS.items() if key.encode() in blob]
    for user, key in gateway.keys.items():
        if key[4:].encode() in blob:
            found.append(f"master key of {user}")
    if b"Z" * 43 in blob:
        found.append("the wrong master key")
    return found


@pytest.fixture(scope="module")
def web_gateway(tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("web")
    gw = make_gateway(
        tmp,
        mock,
        command="web",
        proxy_table={"web_port": free_port()},
        extra_args=("--save", str(tmp / "saved.flows")),
    )
    gw.start()
    yield gw
    gw.stop()


def _web(gateway: Gateway) -> tuple[str, str]:
    for line in gateway.log.read_text().splitlines():
        if "mitmweb:" in line:
            url = line.split("mitmweb:", 1)[1].strip()
            base, _, token = url.partition("/?token=")
            return base, token
    raise AssertionError("lmk web printed no mitmweb URL")


def _get(url: str, token: str) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        data: bytes = response.read()
        return data


def test_mitmweb_saved_flows_and_logs_hold_no_secret(
    web_gateway: Gateway, mock: MockUpstream
) -> None:
    base, token = _web(web_gateway)
    with pytest.raises(urllib.error.HTTPError, match="403"):
        urllib.request.urlopen(f"{base}/flows", timeout=10)  # the UI needs its token
    env = web_gateway.client_env("alice")

    # Poll mitmweb while a stream is in flight: the real key sits in the flow then.
    seen_in_flight: list[bytes] = []
    streaming = threading.Thread(target=run_client, args=(STREAM, env))
    streaming.start()
    while streaming.is_alive():
        seen_in_flight.append(_get(f"{base}/flows", token))
        seen_in_flight.append(_get(f"{base}/flows/dump", token))
        time.sleep(0.05)
    streaming.join()
    assert any(b"api.openai.com" in blob for blob in seen_in_flight)

    result = run_client(CALLS, env)
    assert result.returncode == 0, result.stderr[-2000:]
    flows = _get(f"{base}/flows", token)
    listed = json.loads(flows)
    assert len(listed) >= 5
    assert any("lmk_..." in json.dumps(f["request"]["headers"]) for f in listed)  # markers shown
    dump = _get(f"{base}/flows/dump", token)

    web_gateway.stop()
    saved = (web_gateway.workdir / "saved.flows").read_bytes()
    assert saved, "lmk web --save wrote nothing"
    for name, blob in [
        ("in flight", b"".join(seen_in_flight)),
        ("/flows", flows),
        ("/flows/dump", dump),
        ("saved flows", saved),
        ("proxy log", web_gateway.log.read_bytes()),
    ]:
        assert secrets_in(blob, web_gateway) == [], name
    assert mock.seen  # the calls did reach the provider


def test_plain_mitmdump_with_entry_script(tmp_path: Path, mock: MockUpstream) -> None:
    gw = make_gateway(tmp_path, mock)
    port = gw.port  # the config's proxy.listen_host/port: anything else is refused
    log = tmp_path / "mitmdump.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            mitmdump_command(
                gw, "--listen-host", "127.0.0.1", "-p", str(port), "-w", str(tmp_path / "flows")
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=gw.environment(),
        )
    try:
        deadline = time.monotonic() + 30
        # mitmproxy starts listening after the script's configure: then it is ready, and on
        # the config's address.
        while f"listening at 127.0.0.1:{port}".encode() not in log.read_bytes():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        env = gw.client_env("alice")
        env["HTTPS_PROXY"] = env["https_proxy"] = f"http://127.0.0.1:{port}"
        mock.clear()
        result = run_client(
            "from openai import OpenAI\nprint(OpenAI().models.list().data[0].id)", env
        )
        assert result.returncode == 0, result.stderr[-2000:] + log.read_text()
        assert mock.seen[0].header("authorization") == f"Bearer {REAL_KEYS['openai']}"
    finally:
        process.terminate()
        process.wait(10)
    assert secrets_in((tmp_path / "flows").read_bytes() + log.read_bytes(), gw) == []


@pytest.mark.parametrize("where", [["--listen-host", "0.0.0.0"], []], ids=["any", "default"])
def test_plain_mitmdump_refuses_another_listen_address_than_the_configs(
    tmp_path: Path, mock: MockUpstream, where: list[str]
) -> None:
    """mitmdump alone listens on *:8080: it stops, naming the flags for the config's address."""
    gw = make_gateway(tmp_path, mock)
    result = subprocess.run(
        mitmdump_command(gw, *where, "-p", str(free_port())),
        capture_output=True,
        text=True,
        env=gw.environment(),
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert "proxy.listen_host = '127.0.0.1'" in output, output
    assert f"--listen-host 127.0.0.1 -p {gw.port}" in output
