"""End-to-end harness: a real `lmk serve` process, users made with `lmk keys new`, and client
environments printed by `lmk env`: the same steps a team follows."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
LMK = str(VENV_BIN / "lmk")

# Fake "real" provider keys: what the mock must see, and what must never leak.
REAL_KEYS = {
    "openai": "sk-proj-REALopenaiKEY0123456789abcdefghij",
    "anthropic": "sk-ant-api03-REALanthropicKEY0123456789abcdef",
    "cohere": "REALcohereKEY0123456789abcdefghijklmn",
    "huggingface": "hf_REALhuggingfaceKEY0123456789abcdefgh",
    "gemini": "AIzaREALgeminiKEY0123456789abcdefghijk",
    "mistral": "REALmistralKEY0123456789abcdefghijklm",
    "groq": "gsk_REALgroqKEY0123456789abcdefghijklmn",
    "deepseek": "sk-REALdeepseekKEY0123456789abcdefghij",
    "openrouter": "sk-or-v1-REALopenrouterKEY0123456789abcd",
    "xai": "xai-REALxaiKEY0123456789abcdefghijklmnop",
    "together": "REALtogetherKEY0123456789abcdefghijklm",
    "fireworks": "fw_REALfireworksKEY0123456789abcdefghij",
    "perplexity": "pplx-REALperplexityKEY0123456789abcdefg",
    "azure": "REALazureKEY0123456789abcdefghijklmnopq",
    "vectara": "zwt_REALvectaraKEY0123456789abcdefghijk",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(condition: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Poll `condition` until it holds; fail naming `what` once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def mitmdump_command(gateway: Gateway, *args: str) -> list[str]:
    """`mitmdump -s addons/entry.py` on `gateway`'s config and certs, plus `args`."""
    entry = Path(__file__).resolve().parents[1] / "addons" / "entry.py"
    certs = gateway.workdir / "certs"
    return [
        str(VENV_BIN / "mitmdump"),
        "-s",
        str(entry),
        "--set",
        f"lmk_config={gateway.config}",
        "--set",
        f"confdir={certs}",
        *args,
    ]


def run_lmk(
    config: Path, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LMK, "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@dataclass
class Gateway:
    """One `lmk serve` process on its own directory, config and port."""

    workdir: Path
    upstream: tuple[str, int]
    upstream_ca: Path
    proxy_table: Mapping[str, object] = field(default_factory=dict)
    audit_table: Mapping[str, object] = field(default_factory=dict)
    providers_without_keys: Iterable[str] = ()
    extra_toml: str = ""
    group_tables: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    """Settings of the `research` and `ops` groups' tables, e.g. {"research": {"traces": …}}."""
    command: str = "serve"
    extra_args: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.workdir / "lmk_config.toml"

    @property
    def log(self) -> Path:
        return self.workdir / "proxy.log"

    @property
    def audit_db(self) -> Path:
        return self.workdir / "audit.db"

    def write_config(self) -> None:
        host, port = self.upstream
        lines = [
            "[proxy]",
            'listen_host = "127.0.0.1"',
            f"listen_port = {self.port}",
            'certs_dir = "certs"',
        ]
        for key, value in self.proxy_table.items():
            lines.append(f"{key} = {_toml(value)}")
        lines += ["", "[audit]", 'path = "audit.db"']
        lines += [f"{key} = {_toml(value)}" for key, value in self.audit_table.items()]
        lines.append("")
        skip = set(self.providers_without_keys)
        for name in REAL_KEYS:
            lines.append(f"[providers.{name}]")
            if name not in skip:
                lines.append(f'keys = ["${{LMK_TEST_{name.upper()}_KEY}}"]')
            lines.append(f'connect_to = "{host}:{port}"')
            lines.append(f'upstream_ca = "{self.upstream_ca}"')
            lines.append("")
        for group in ("research", "ops"):
            lines.append(f"[groups.{group}]")
            settings = self.group_tables.get(group, {})
            lines += [f"{key} = {_toml(value)}" for key, value in settings.items()]
        lines += ["", "[users]", self.extra_toml]
        self.config.write_text("\n".join(lines) + "\n")

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN"))}
        env.update({f"LMK_TEST_{name.upper()}_KEY": key for name, key in REAL_KEYS.items()})
        return env

    def new_user(self, name: str, *groups: str) -> str:
        args = ["keys", "new", name, *(a for g in groups for a in ("--group", g))]
        result = run_lmk(self.config, *args)
        assert result.returncode == 0, result.stderr
        key = result.stdout.strip()
        self.keys[name] = key
        return key

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.config.exists():
            self.write_config()
        # A restart appends to the log: only what this process writes says it is listening.
        offset = self.log.stat().st_size if self.log.exists() else 0
        log = self.log.open("ab")
        self.process = subprocess.Popen(
            [LMK, "--config", str(self.config), self.command, *self.extra_args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.environment(),
            cwd=self.workdir,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"lmk {self.command} exited:\n{self.log.read_text()}")
            if "listening on" in self.log.read_bytes()[offset:].decode(errors="replace"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"lmk {self.command} did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def client_env(self, user: str, **extra: str) -> dict[str, str]:
        """The environment `lmk env USER` prints, on top of a clean copy of ours."""
        # The key goes in the environment: a process's arguments are readable by every user.
        result = run_lmk(
            self.config,
            "env",
            user,
            "--output",
            str(self.workdir / f"{user}.env"),
            env={"LMK_MASTER_KEY": self.keys[user]},
        )
        assert result.returncode == 0, result.stderr
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.endswith(("_API_KEY", "_TOKEN", "_PROXY", "_proxy"))
        }
        for line in result.stdout.splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = value.strip("'")
        env.update(extra)
        return env


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def run_client(
    code: str, env: Mapping[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a client snippet in a fresh Python process, configured only by `env`."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=dict(env)
    )
