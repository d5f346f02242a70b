"""Run the LlaMaKey benchmark: every scenario, interleaved, in one run, on loopback only.

Scenarios (one long-running process each, started once and measured from outside):

* ``direct``   - the load generator talks TLS straight to the mock upstream (the floor);
* ``mitmdump`` - stock ``mitmdump`` with only ``redirect_addon.py`` (CONNECT + TLS interception);
* ``gateway``  - ``lmk serve`` with every addon on (auth, audit, metering), no rules;
* ``rules``    - the same with a realistic policy (`POLICY`: endpoint and model allow-lists, a
  rate limit and a budget on the user, counters in the local store): what the rules cost;
* ``litellm``  - LiteLLM proxy (pinned), one worker, master key only, no database. It is a
  *reverse* proxy: clients call it by base URL over plain HTTP, so its client path has no
  CONNECT and no client-side TLS (cheaper for it than for the two mitmproxy scenarios).

Workloads: non-streaming chat completions at concurrency 1, 16, 64; streaming (20 chunks x 5 ms)
at 1 and 16; then 1,000 concurrent long streams for memory. Each workload runs ``--rounds``
rounds, and every round runs each scenario once in a rotated order, so slow drifts of the
machine hit all scenarios alike. CPU is read from /proc/<pid>/stat (utime+stime) around the
timed phase only; RSS from /proc/<pid>/status (VmRSS sampled every 50 ms, and VmHWM).

Writes ``bench/results/<timestamp>.json`` and ``.md`` and prints the Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import queue
import secrets
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
MAIN_VENV = REPO / ".venv"
LITELLM_VENV = BENCH / ".venv-litellm"
TOOLS_VENV = BENCH / ".venv-tools"
LITELLM_VERSION = "1.106.2"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Ports are fixed (loopback) so a stray process is easy to spot; override with --base-port.
SCENARIOS = ("direct", "mitmdump", "gateway", "rules", "litellm")

# The policy of the "rules" scenario: what a team would set, with limits high enough that no
# request of the run is refused (every request still runs the whole admission: allow-lists
# matched, a request counted, a worst-case cost reserved and settled).
POLICY = """
[defaults]
endpoints.openai = ["GET /v1/models", "POST /v1/chat/completions", "POST /v1/embeddings"]
models.openai = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-*"]
endpoints.anthropic = ["POST /v1/messages", "POST /v1/messages/count_tokens"]
models.anthropic = ["claude-*-haiku-*"]
"""
USER_POLICY = """groups = ["bench"]
rate_limits = [{ requests = 100000000, per = "minute" }]
budgets = [{ usd = 1000000.0, per = "day" }]

[groups.bench]
"""


@dataclass(frozen=True)
class Workload:
    """One load shape; every scenario runs it in each round."""

    name: str
    stream: bool
    concurrency: int
    warmup: int


WORKLOADS = (
    Workload("chat c=1", False, 1, 5),
    Workload("chat c=16", False, 16, 3),
    Workload("chat c=64", False, 64, 2),
    Workload("stream c=1", True, 1, 2),
    Workload("stream c=16", True, 16, 1),
)


# --------------------------------------------------------------------------- /proc readings


def _tree(pid: int) -> list[int]:
    """The pid and all its live descendants (LiteLLM/uvicorn may fork)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def cpu_seconds(pid: int) -> float:
    """utime+stime of the process tree, in seconds."""
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            # Field 2 (comm) may contain spaces; split after its closing parenthesis.
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of the process tree, in KiB."""
    rss = hwm = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm += int(line.split()[1])
    return rss, hwm


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal ...: everything but idle and iowait.
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


class RssSampler:
    """Samples VmRSS of some processes every 50 ms in a thread; keeps the maximum."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], memory_kib(pid)[0])
            self._stop.wait(0.05)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------- processes


class Proc:
    """A child process we started; its output goes to a log file, lines can be awaited."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log: Path,
        env: dict[str, str] | None = None,
        stdin: bool = False,
        capture: bool = False,
    ) -> None:
        self.name = name
        self.log = log
        self._logf = log.open("w")
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else self._logf,
            stderr=self._logf,
            env=env,
            text=True,
            # Our own process group, so that stopping it ends its workers and nothing else.
            start_new_session=True,
        )
        if capture:
            threading.Thread(target=self._pump, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self._logf.write(line)
            self._logf.flush()
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str, timeout: float) -> str:
        """Wait for a stdout line starting with ``prefix``; raise if the process ends first."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no '{prefix}' within {timeout:.0f}s")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"{self.name} exited; see {self.log}")
            if line.startswith(prefix):
                return line

    def send(self, text: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(text)
        self.popen.stdin.flush()

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._logf.close()


def wait_port(port: int, proc: Proc, timeout: float) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited (code {proc.popen.returncode}); see {proc.log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{proc.name} did not listen on {port} within {timeout:.0f}s")


def wait_file(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.1)


# --------------------------------------------------------------------------- set-up


def make_mock_certs(out: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a leaf for the provider hosts, localhost and 127.0.0.1."""
    import trustme

    out.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="lmk bench throwaway CA")
    leaf = ca.issue_cert("api.openai.com", "api.anthropic.com", "localhost", "127.0.0.1")
    ca_pem, cert_pem, key_pem = out / "mock-ca.pem", out / "mock-cert.pem", out / "mock-key.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    leaf.private_key_pem.write_to_path(str(key_pem))
    cert_pem.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    return ca_pem, cert_pem, key_pem


def mock_call(port: int, ca: Path, method: str, path: str) -> dict[str, Any]:
    """Call the mock's control endpoints directly."""
    ctx = ssl.create_default_context(cafile=str(ca))
    req = urllib.request.Request(
        f"https://127.0.0.1:{port}{path}", method=method, data=b"" if method == "POST" else None
    )
    with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


def gateway_available(lmk: Path) -> str | None:
    """None if `lmk serve` can run, else why not."""
    if not lmk.exists():
        return f"{lmk} is missing"
    try:
        out = subprocess.run(
            [str(lmk), "serve", "--help"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`lmk serve --help` failed: {e}"
    if out.returncode != 0:
        return f"`lmk serve --help` exited {out.returncode}: {out.stderr.strip()[-300:]}"
    return None


class OtlpSink:
    """A local OTLP/HTTP traces receiver that accepts every export and discards it, counting
    the requests, bytes and spans (for ``--traces``). It runs on a thread of this runner, so
    its CPU is not the proxy's."""

    def __init__(self, port: int) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        self.requests = self.bytes = self.spans = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                spans = sum(
                    len(scope.spans)
                    for resource in ExportTraceServiceRequest.FromString(body).resource_spans
                    for scope in resource.scope_spans
                )
                sink.requests, sink.bytes, sink.spans = (
                    sink.requests + 1,
                    sink.bytes + len(body),
                    sink.spans + spans,
                )
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.endpoint = f"http://127.0.0.1:{port}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def write_gateway_config(
    d: Path,
    port: int,
    mock_port: int,
    mock_ca: Path,
    *,
    audit: bool = True,
    rules: bool = False,
    traces_endpoint: str | None = None,
) -> tuple[Path, str]:
    """A config with one user and every addon on (the audit log unless `audit` is False; the
    policy of `POLICY` with `rules`; spans exported to `traces_endpoint` when given); returns
    (path, master key)."""
    d.mkdir(parents=True, exist_ok=True)
    key = "lmk_" + secrets.token_urlsafe(32)
    digest = hashlib.sha256(key.encode()).hexdigest()
    cfg = d / "lmk_config.toml"
    cfg.write_text(
        f"""# Written by bench/run_bench.py for one run.
[proxy]
listen_host = "127.0.0.1"
listen_port = {port}
certs_dir = "{d / "certs"}"

[audit]
enabled = {"true" if audit else "false"}
path = "{d / "audit.db"}"

[providers.openai]
keys = ["sk-bench-real-key"]
connect_to = "127.0.0.1:{mock_port}"
upstream_ca = "{mock_ca}"

[providers.anthropic]
keys = ["sk-ant-bench-real-key"]
connect_to = "127.0.0.1:{mock_port}"
upstream_ca = "{mock_ca}"
{POLICY if rules else ""}
[users.bench]
key_sha256 = "{digest}"
{USER_POLICY if rules else ""}"""
        + (
            f'\n[traces]\nenabled = true\nendpoint = "{traces_endpoint}"\n'
            if traces_endpoint
            else ""
        )
    )
    return cfg, key


def write_litellm_config(d: Path, mock_port: int, mock_ca: Path, master: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    cfg = d / "litellm.yaml"
    models = ""
    for name in ("gpt-4o-mini", "bench-long"):
        models += f"""  - model_name: {name}
    litellm_params:
      model: openai/{name}
      api_base: https://127.0.0.1:{mock_port}/v1
      api_key: sk-bench-real-key
"""
    cfg.write_text(
        f"""# Written by bench/run_bench.py: master key only, no database, defaults otherwise.
model_list:
{models}litellm_settings:
  ssl_verify: "{mock_ca}"
  drop_params: true
general_settings:
  master_key: {master}
"""
    )
    return cfg


# --------------------------------------------------------------------------- measuring


@dataclass
class Target:
    """A scenario ready to be loaded: how to reach it and which process to measure."""

    name: str
    proc: Proc | None  # the proxy process (None for direct)
    loadgen: list[str]  # loadgen arguments that select the path to the mock


@dataclass
class Run:
    """One loadgen run's summary (raw samples are pooled per workload, not stored per run)."""

    scenario: str
    workload: str
    round: int
    ok: int
    errors: int
    error_kinds: dict[str, int]
    rps: float
    elapsed_s: float
    proxy_cpu_s: float | None
    mock_cpu_s: float
    client_cpu_s: float
    upstream_conns: int
    peak_rss_kib: int | None
    # CPU that processes outside the benchmark took during the timed phase: other work on a
    # shared 2-core machine slows every scenario; this says how much a run was disturbed.
    other_cpu_s: float
    raw: dict[str, list[float]] = field(repr=False, default_factory=dict)


def pct(values: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank) or None."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


class Bench:
    """Holds the processes and settings of one benchmark run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.py = str(MAIN_VENV / "bin" / "python")
        self.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.work = BENCH / "results" / self.stamp
        self.work.mkdir(parents=True, exist_ok=True)
        self.procs: list[Proc] = []
        self.targets: dict[str, Target] = {}
        self.skipped: dict[str, str] = {}
        self.idle_rss: dict[str, int] = {}
        self.runs: list[Run] = []
        self.memory: dict[str, dict[str, Any]] = {}
        self.sink: OtlpSink | None = None  # --traces: where the gateway's spans go

    # ---- start-up

    def start(self) -> None:
        a = self.args
        port = a.base_port
        self.mock_port, mitm_port, gw_port, ll_port = port, port + 1, port + 2, port + 3
        rules_port = port + 4
        self.mock_ca, cert, key = make_mock_certs(self.work / "mock")
        self.mock = self.spawn(
            "mock",
            [
                self.py,
                str(BENCH / "mock_upstream.py"),
                "--port",
                str(self.mock_port),
                "--cert",
                str(cert),
                "--key",
                str(key),
                "--chunks",
                str(a.chunks),
                "--chunk-delay-ms",
                str(a.chunk_delay_ms),
                "--long-interval-ms",
                "1000",
            ],
            capture=True,
        )
        self.mock.expect("READY", 30)
        self.targets["direct"] = Target(
            "direct",
            None,
            [
                "--mode",
                "direct",
                "--addr",
                f"127.0.0.1:{self.mock_port}",
                "--ca",
                str(self.mock_ca),
            ],
        )
        want = set(a.scenarios)
        if "mitmdump" in want:
            conf = self.work / "mitmdump"
            conf.mkdir()
            # eager (mitmproxy's default), not lazy: with lazy, a redirect in server_connect
            # breaks upstream keep-alive (a new TLS connection per request), which would make
            # stock mitmproxy look slower than it is. The gateway uses the same technique.
            proc = self.spawn(
                "mitmdump",
                [
                    str(MAIN_VENV / "bin" / "mitmdump"),
                    "-q",
                    "--listen-host",
                    "127.0.0.1",
                    "--listen-port",
                    str(mitm_port),
                    "--set",
                    f"confdir={conf}",
                    "--set",
                    "connection_strategy=eager",
                    "--set",
                    f"ssl_verify_upstream_trusted_ca={self.mock_ca}",
                    "-s",
                    str(BENCH / "redirect_addon.py"),
                    "--set",
                    f"bench_mock=127.0.0.1:{self.mock_port}",
                ],
            )
            wait_port(mitm_port, proc, 60)
            wait_file(conf / "mitmproxy-ca-cert.pem", 30)
            self.targets["mitmdump"] = Target(
                "mitmdump",
                proc,
                [
                    "--mode",
                    "connect",
                    "--addr",
                    f"127.0.0.1:{mitm_port}",
                    "--ca",
                    str(conf / "mitmproxy-ca-cert.pem"),
                ],
            )
        lmk = MAIN_VENV / "bin" / "lmk"
        for name, gateway_port in (("gateway", gw_port), ("rules", rules_port)):
            if name not in want:
                continue
            why = gateway_available(lmk)
            if why:
                self.skipped[name] = why
                continue
            try:
                self.start_gateway(lmk, gateway_port, name)
            except (RuntimeError, TimeoutError) as e:
                self.skipped[name] = str(e)
        if "litellm" in want:
            exe = LITELLM_VENV / "bin" / "litellm"
            if not exe.exists():
                self.skipped["litellm"] = f"{exe} missing (run bench/run.sh to install it)"
            else:
                try:
                    self.start_litellm(exe, ll_port)
                except (RuntimeError, TimeoutError) as e:
                    self.skipped["litellm"] = str(e)
        # Let start-up work (imports, CA generation, background tasks) settle, then read the
        # idle RSS before any traffic.
        time.sleep(3)
        for name, t in self.targets.items():
            if t.proc is not None:
                self.idle_rss[name] = memory_kib(t.proc.pid)[0]
        self.idle_rss["mock"] = memory_kib(self.mock.pid)[0]

    def spawn(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        capture: bool = False,
        stdin: bool = False,
    ) -> Proc:
        proc = Proc(name, argv, self.work / f"{name}.log", env=env, capture=capture, stdin=stdin)
        self.procs.append(proc)
        return proc

    def start_gateway(self, lmk: Path, port: int, name: str = "gateway") -> None:
        """`lmk serve` as scenario `name`: "gateway" (no rules) or "rules" (`POLICY`)."""
        d = self.work / name
        if self.args.traces and self.sink is None:  # one sink for both gateway scenarios
            self.sink = OtlpSink(self.args.base_port + 5)
        cfg, key = write_gateway_config(
            d,
            port,
            self.mock_port,
            self.mock_ca,
            audit=not self.args.no_audit,
            rules=name == "rules",
            traces_endpoint=self.sink.endpoint if self.sink else None,
        )
        # The gateway runs the working tree (editable install), which moves while others work:
        # record what it started from, not what HEAD is when the run ends.
        self.gateway_code = git_describe()
        # --quiet: no line per request, as stock mitmdump runs with -q (the line's cost is a
        # terminal's, not the gateway's; `--announce` measures it).
        serve = [str(lmk), "--config", str(cfg), "serve"]
        if not self.args.announce:
            serve.append("--quiet")
        proc = self.spawn(name, serve)
        wait_port(port, proc, 90)
        ca = d / "certs" / "mitmproxy-ca-cert.pem"
        wait_file(ca, 30)
        self.targets[name] = Target(
            name,
            proc,
            [
                "--mode",
                "connect",
                "--addr",
                f"127.0.0.1:{port}",
                "--ca",
                str(ca),
                "--header",
                f"Authorization: Bearer {key}",
            ],
        )
        # One request must go through before we measure: a broken config should be a clear
        # skip with the gateway's own answer, not a table full of errors.
        self.smoke(name)

    def start_litellm(self, exe: Path, port: int) -> None:
        master = "sk-bench-" + secrets.token_hex(8)
        cfg = write_litellm_config(self.work / "litellm", self.mock_port, self.mock_ca, master)
        env = dict(os.environ)
        env.update(
            LITELLM_LOCAL_MODEL_COST_MAP="True",  # offline: no fetch of the price map
            SSL_CERT_FILE=str(self.mock_ca),
            REQUESTS_CA_BUNDLE=str(self.mock_ca),
            LITELLM_TELEMETRY="False",
        )
        env.pop("DATABASE_URL", None)
        proc = self.spawn(
            "litellm",
            [
                str(exe),
                "--config",
                str(cfg),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--num_workers",
                "1",
            ],
            env=env,
        )
        wait_port(port, proc, 180)
        self.targets["litellm"] = Target(
            "litellm",
            proc,
            [
                "--mode",
                "reverse",
                "--addr",
                f"127.0.0.1:{port}",
                "--header",
                f"Authorization: Bearer {master}",
            ],
        )
        self.smoke("litellm")

    def smoke(self, name: str) -> None:
        t = self.targets[name]
        out = subprocess.run(
            [
                self.py,
                str(BENCH / "loadgen.py"),
                *t.loadgen,
                "--requests",
                "3",
                "--duration",
                "20",
                "--warmup",
                "0",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        try:
            res = json.loads(out.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            res = {"ok": 0, "errors": -1}
        if res.get("ok", 0) < 3:
            del self.targets[name]
            raise RuntimeError(
                f"{name}: smoke test failed: {res.get('error_kinds') or out.stderr[-500:]}"
            )

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        if self.sink is not None:
            self.sink.stop()

    # ---- workloads

    def run_once(self, t: Target, w: Workload, rnd: int) -> Run:
        a = self.args
        argv = [
            self.py,
            str(BENCH / "loadgen.py"),
            *t.loadgen,
            "--concurrency",
            str(w.concurrency),
            "--requests",
            str(a.requests),
            "--duration",
            str(a.duration),
            "--warmup",
            str(w.warmup),
            "--wait-go",
        ]
        if w.stream:
            argv.append("--stream")
        stats0 = mock_call(self.mock_port, self.mock_ca, "GET", "/__bench/stats")
        lg = Proc(
            f"loadgen-{t.name}", argv, self.work / "loadgen.log.tmp", stdin=True, capture=True
        )
        try:
            lg.expect("READY", 120)
            pid = t.proc.pid if t.proc else None
            sampler = RssSampler({"proxy": pid} if pid else {})
            p0 = cpu_seconds(pid) if pid else 0.0
            m0 = cpu_seconds(self.mock.pid)
            busy0 = machine_busy_seconds()
            with sampler:
                lg.send("GO\n")
                lg.expect("DONE", a.duration + 60)
                p1 = cpu_seconds(pid) if pid else 0.0
                m1 = cpu_seconds(self.mock.pid)
                busy1 = machine_busy_seconds()
            res = json.loads(lg.expect("{", 60))
        finally:
            lg.stop()
        stats1 = mock_call(self.mock_port, self.mock_ca, "GET", "/__bench/stats")
        ok = int(res["ok"])
        return Run(
            scenario=t.name,
            workload=w.name,
            round=rnd,
            ok=ok,
            errors=int(res["errors"]),
            error_kinds=res["error_kinds"],
            rps=ok / res["elapsed_s"],
            elapsed_s=res["elapsed_s"],
            proxy_cpu_s=(p1 - p0) if pid else None,
            mock_cpu_s=m1 - m0,
            client_cpu_s=res["client_cpu_s"],
            # Minus our own two control connections (stats before and after).
            upstream_conns=stats1["connections"] - stats0["connections"] - 1,
            peak_rss_kib=sampler.peak.get("proxy"),
            other_cpu_s=max(0.0, (busy1 - busy0) - (p1 - p0) - (m1 - m0) - res["client_cpu_s"]),
            raw={k: res[k] for k in ("latencies_ms", "ttfb_ms", "gaps_ms")},
        )

    def wait_quiet(self) -> float:
        """Wait (up to --wait-quiet s) for other processes to leave the CPUs mostly idle.

        Other people's test runs on the same 2 cores slow every scenario; interleaving keeps
        the ratios fair, but a quiet machine keeps the absolute numbers meaningful. Returns
        the share of the machine that others used in the last 1 s window.
        """
        deadline = time.monotonic() + self.args.wait_quiet
        cores = os.cpu_count() or 1
        while True:
            b0 = machine_busy_seconds()
            time.sleep(1.0)
            other = (machine_busy_seconds() - b0) / cores
            if other < 0.25 or time.monotonic() >= deadline:
                return other

    def run_workloads(self) -> None:
        a = self.args
        names = [s for s in SCENARIOS if s in self.targets]
        for w in WORKLOADS:
            if w.name not in a.workloads:
                continue
            for rnd in range(a.rounds):
                if a.wait_quiet > 0:
                    self.wait_quiet()
                # Rotate the order each round so no scenario always runs first or last.
                order = names[rnd % len(names) :] + names[: rnd % len(names)]
                for name in order:
                    run = self.run_once(self.targets[name], w, rnd)
                    self.runs.append(run)
                    err = f" errors={run.errors} {run.error_kinds}" if run.errors else ""
                    print(
                        f"  {w.name:12} r{rnd} {name:9} {run.rps:8.1f} req/s "
                        f"p50={pct(run.raw['latencies_ms'], 50) or 0:7.2f} ms "
                        f"upstream_conns={run.upstream_conns}{err}",
                        flush=True,
                    )

    def run_memory(self) -> None:
        """Hold N long streams through each proxy; read RSS at milestones."""
        a = self.args
        n = a.streams
        # Not "rules": its streams hold what the gateway's hold (the rules keep no per-stream
        # state beyond a flow's few reservations).
        for name in [s for s in SCENARIOS if s in self.targets and s not in ("direct", "rules")]:
            t = self.targets[name]
            assert t.proc is not None
            mock_call(self.mock_port, self.mock_ca, "POST", "/__bench/arm")
            time.sleep(1)
            before = memory_kib(t.proc.pid)[0]
            marks = [n // 4, n // 2, 3 * n // 4]
            argv = [
                self.py,
                str(BENCH / "loadgen.py"),
                *t.loadgen,
                "--hold",
                "--model",
                "bench-long",
                "--concurrency",
                str(n),
                "--duration",
                str(a.hold_cap),
                "--milestones",
                ",".join(str(m) for m in marks),
            ]
            lg = Proc(f"hold-{name}", argv, self.work / f"hold-{name}.log", capture=True)
            points: dict[int, int] = {0: before}
            held_at = None
            t0 = time.monotonic()
            try:
                with RssSampler({"proxy": t.proc.pid}) as sampler:
                    deadline = t0 + a.ramp_cap
                    while time.monotonic() < deadline:
                        try:
                            line = lg.expect("", max(0.1, deadline - time.monotonic()))
                        except TimeoutError:
                            break
                        if line.startswith("OPEN "):
                            points[int(line.split()[1])] = memory_kib(t.proc.pid)[0]
                        elif line.startswith("HELD "):  # all open: measure below
                            held_at = time.monotonic() - t0
                            break
                    # Let buffers and caches of the open streams settle, then read again.
                    time.sleep(3)
                    held_rss = memory_kib(t.proc.pid)[0]
                    # The mock knows how many streams are open end to end right now; if the
                    # ramp hit its cap, that is fewer than were asked for.
                    held = int(
                        mock_call(self.mock_port, self.mock_ca, "GET", "/__bench/stats")[
                            "open_streams"
                        ]
                    )
                    if held_at is not None:
                        points[held] = held_rss
                    mock_call(self.mock_port, self.mock_ca, "POST", "/__bench/release")
                    lg.expect("DONE", a.hold_cap + 30)
                    res = json.loads(lg.expect("{", 30))
                time.sleep(3)
                after = memory_kib(t.proc.pid)[0]
            finally:
                lg.stop()
                mock_call(self.mock_port, self.mock_ca, "POST", "/__bench/release")
            per_stream = (held_rss - before) / held if held else None
            q = sorted(k for k in points if k)
            slope_lo = slope_hi = None
            if len(q) >= 3:
                mid = q[(len(q) - 1) // 2]  # 500 of 250..1000: halves 250-500 and 500-1000
                slope_lo = (points[mid] - points[q[0]]) / (mid - q[0])
                slope_hi = (points[q[-1]] - points[mid]) / (q[-1] - mid)
            self.memory[name] = {
                "streams": n,
                "opened": held,
                "completed": res.get("ok"),
                "errors": res.get("errors"),
                "error_kinds": res.get("error_kinds"),
                "ramp_s": held_at,
                "rss_before_kib": before,
                "rss_held_kib": held_rss,
                "rss_after_kib": after,
                "peak_rss_kib": sampler.peak["proxy"],
                "points_kib": points,
                "kib_per_stream": per_stream,
                "slope_first_half_kib": slope_lo,
                "slope_second_half_kib": slope_hi,
            }
            print(
                f"  memory {name:9} held={held}/{n} before={before / 1024:.0f} MiB "
                f"held={held_rss / 1024:.0f} MiB after={after / 1024:.0f} MiB "
                f"per-stream={per_stream or 0:.1f} KiB",
                flush=True,
            )

    def profile(self, name: str, workload: Workload, seconds: float) -> None:
        """py-spy a proxy under one workload; write the raw stacks and a top list."""
        spy = TOOLS_VENV / "bin" / "py-spy"
        t = self.targets.get(name)
        if t is None or t.proc is None or not spy.exists():
            return
        raw = self.work / f"profile-{name}.txt"
        rec = subprocess.Popen(
            [
                str(spy),
                "record",
                "-p",
                str(t.proc.pid),
                "-d",
                str(int(seconds)),
                "-r",
                "250",
                "-f",
                "raw",
                "-o",
                str(raw),
                "--nonblocking",
                "--threads",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        old = self.args.duration
        self.args.duration = seconds - 1
        try:
            self.run_once(t, workload, -1)
        finally:
            self.args.duration = old
        rec.wait(timeout=seconds + 60)
        if raw.exists():
            (self.work / f"profile-{name}.top.txt").write_text(summarise_profile(raw))


def _function(frame: str) -> str:
    """``Class.meth (pkg/mod.py:123)`` -> ``Class.meth (pkg/mod.py)``: group lines of a function."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rpartition(':')[0]})" if ":" in where else frame


def summarise_profile(raw: Path, top: int = 25) -> str:
    """Per-thread, self and inclusive sample shares per function, from py-spy's raw output.

    The raw format is one collapsed stack per line (root first, with ``--threads`` a thread
    frame as the root) and a sample count. Self time says where the CPU goes; inclusive time
    of the project's own functions (``addons/``) says what each of our hooks costs in total.
    """
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    ours: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if f]
        if frames and frames[0].startswith("thread ("):
            threads[frames[0]] = threads.get(frames[0], 0) + n
            frames = frames[1:]
        if not frames:
            continue
        funcs = [_function(f) for f in frames]
        own[funcs[-1]] = own.get(funcs[-1], 0) + n
        for f in set(funcs):
            incl[f] = incl.get(f, 0) + n
            if "(llamakey/" in f and not f.startswith(("main ", "cmd_serve ", "run ")):
                ours[f] = ours.get(f, 0) + n
    total = max(total, 1)

    def block(title: str, d: dict[str, int], k: int) -> list[str]:
        rows = sorted(d.items(), key=lambda x: -x[1])[:k]
        return ["", title, *(f"{100 * v / total:5.1f}%  {name}" for name, v in rows)]

    out = [f"samples: {total} (share of all samples, all threads)"]
    out += block("threads:", threads, 10)
    out += block("self, by function:", own, top)
    out += block("inclusive, the project's own functions (addons/):", ours, top)
    out += block("inclusive, all:", incl, top * 2)
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- reporting


def git_describe() -> str:
    """The commit of the work tree, with ``-dirty`` if files differ from it."""
    try:
        return (
            subprocess.run(
                ["git", "-C", str(REPO), "describe", "--always", "--dirty", "--abbrev=7"],
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout.strip()
            or "n/a"
        )
    except (OSError, subprocess.TimeoutExpired):
        return "n/a"


def machine() -> dict[str, str]:
    """What the numbers came from."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def version(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "n/a"

    mem_kib = 0
    with contextlib.suppress(OSError):
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    py = str(MAIN_VENV / "bin" / "python")
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": version([py, "-c", "import sys; print(sys.version.split()[0])"]),
        "mitmproxy": version([py, "-c", "import mitmproxy.version as v; print(v.VERSION)"]),
        "litellm": version(
            [
                str(LITELLM_VENV / "bin" / "python"),
                "-c",
                "import importlib.metadata as m; print(m.version('litellm'))",
            ]
        )
        if LITELLM_VENV.exists()
        else "not installed",
        "gateway_commit": git_describe(),
    }


def summarise(b: Bench) -> dict[str, Any]:
    """Pool the rounds per (workload, scenario) and compute the ratios and targets."""
    cells: dict[str, dict[str, dict[str, Any]]] = {}
    for w in WORKLOADS:
        for s in SCENARIOS:
            runs = [r for r in b.runs if r.workload == w.name and r.scenario == s]
            if not runs:
                continue
            lat = [x for r in runs for x in r.raw["latencies_ms"]]
            ttfb = [x for r in runs for x in r.raw["ttfb_ms"]]
            gaps = [x for r in runs for x in r.raw["gaps_ms"]]
            ok = sum(r.ok for r in runs)
            cell: dict[str, Any] = {
                "rounds": len(runs),
                "ok": ok,
                "errors": sum(r.errors for r in runs),
                "rps_median": statistics.median(r.rps for r in runs),
                "rps_rounds": [round(r.rps, 1) for r in runs],
                "p50_ms": pct(lat, 50),
                "p90_ms": pct(lat, 90),
                "p99_ms": pct(lat, 99),
                "proxy_cpu_ms_per_req": (
                    1000 * sum(r.proxy_cpu_s or 0 for r in runs) / ok
                    if ok and runs[0].proxy_cpu_s is not None
                    else None
                ),
                "mock_cpu_ms_per_req": 1000 * sum(r.mock_cpu_s for r in runs) / ok if ok else None,
                "client_cpu_ms_per_req": (
                    1000 * sum(r.client_cpu_s for r in runs) / ok if ok else None
                ),
                "upstream_conns_per_run": [r.upstream_conns for r in runs],
                # Share of the machine (all cores) that other processes took while we measured.
                "other_load_pct": 100
                * sum(r.other_cpu_s for r in runs)
                / max(1e-9, (os.cpu_count() or 1) * sum(r.elapsed_s for r in runs)),
                "peak_rss_kib": max((r.peak_rss_kib or 0) for r in runs) or None,
            }
            if w.stream:
                cell.update(
                    ttfb_p50_ms=pct(ttfb, 50),
                    ttfb_p99_ms=pct(ttfb, 99),
                    gap_mean_ms=statistics.fmean(gaps) if gaps else None,
                    gap_p50_ms=pct(gaps, 50),
                    gap_p99_ms=pct(gaps, 99),
                )
            cells.setdefault(w.name, {})[s] = cell
    ratios: dict[str, dict[str, Any]] = {}
    for wname, row in cells.items():
        r: dict[str, Any] = {}
        gw, mt, dr, ll = (row.get(k) for k in ("gateway", "mitmdump", "direct", "litellm"))
        if gw and mt:
            r["gateway_over_mitmdump_rps"] = gw["rps_median"] / mt["rps_median"]
            if gw["proxy_cpu_ms_per_req"] and mt["proxy_cpu_ms_per_req"]:
                r["gateway_over_mitmdump_cpu"] = (
                    gw["proxy_cpu_ms_per_req"] / mt["proxy_cpu_ms_per_req"]
                )
            r["added_p50_vs_mitmdump_ms"] = gw["p50_ms"] - mt["p50_ms"]
            r["added_p99_vs_mitmdump_ms"] = gw["p99_ms"] - mt["p99_ms"]
            if gw.get("gap_mean_ms") is not None and mt.get("gap_mean_ms") is not None:
                r["added_gap_vs_mitmdump_ms"] = gw["gap_mean_ms"] - mt["gap_mean_ms"]
                r["added_ttfb_vs_mitmdump_ms"] = gw["ttfb_p50_ms"] - mt["ttfb_p50_ms"]
        for name, maybe in (("gateway", gw), ("mitmdump", mt), ("litellm", ll)):
            if maybe and dr:
                cell = maybe
                r[f"{name}_added_p50_vs_direct_ms"] = cell["p50_ms"] - dr["p50_ms"]
                r[f"{name}_added_p99_vs_direct_ms"] = cell["p99_ms"] - dr["p99_ms"]
                if cell.get("ttfb_p50_ms") is not None and dr.get("ttfb_p50_ms") is not None:
                    r[f"{name}_added_ttfb_vs_direct_ms"] = cell["ttfb_p50_ms"] - dr["ttfb_p50_ms"]
                if cell.get("gap_mean_ms") is not None and dr.get("gap_mean_ms") is not None:
                    r[f"{name}_added_gap_vs_direct_ms"] = cell["gap_mean_ms"] - dr["gap_mean_ms"]
        rl = row.get("rules")
        if rl and gw and rl["proxy_cpu_ms_per_req"] and gw["proxy_cpu_ms_per_req"]:
            r["rules_added_cpu_ms"] = rl["proxy_cpu_ms_per_req"] - gw["proxy_cpu_ms_per_req"]
            r["rules_added_p50_ms"] = rl["p50_ms"] - gw["p50_ms"]
        if gw and ll:
            r["gateway_over_litellm_rps"] = gw["rps_median"] / ll["rps_median"]
        if mt and ll:
            r["mitmdump_over_litellm_rps"] = mt["rps_median"] / ll["rps_median"]
        ratios[wname] = r
    return {"cells": cells, "ratios": ratios, "targets": targets(cells, ratios, b.memory)}


def targets(
    cells: dict[str, Any], ratios: dict[str, Any], memory: dict[str, Any]
) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and a verdict (None: not measured)."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: str, ok: bool | None) -> None:
        out.append({"target": name, "measured": value, "met": ok})

    chat = [w.name for w in WORKLOADS if not w.stream and w.name in ratios]
    vals = [(w, ratios[w].get("gateway_over_mitmdump_rps")) for w in chat]
    have = [(w, v) for w, v in vals if v is not None]
    add(
        "gateway req/s >= 0.9 x mitmdump at every concurrency",
        ", ".join(f"{w}: {v:.2f}x" for w, v in have) or "n/a",
        all(v >= 0.9 for _, v in have) if have else None,
    )
    c1 = ratios.get("chat c=1", {}).get("added_p50_vs_mitmdump_ms")
    add(
        "added p50 <= 1 ms over mitmdump at c=1",
        f"{c1:+.2f} ms" if c1 is not None else "n/a",
        c1 <= 1.0 if c1 is not None else None,
    )
    gaps = [
        (w, r["added_gap_vs_mitmdump_ms"])
        for w, r in ratios.items()
        if w.startswith("stream") and r.get("added_gap_vs_mitmdump_ms") is not None
    ]
    add(
        "stream cadence: <= 1 ms added per chunk (vs mitmdump)",
        ", ".join(f"{w}: {v:+.2f} ms" for w, v in gaps) or "n/a",
        all(v <= 1.0 for _, v in gaps) if gaps else None,
    )
    m = memory.get("gateway")
    if m and m.get("kib_per_stream") is not None and m.get("opened") == m.get("streams"):
        lo, hi = m.get("slope_first_half_kib"), m.get("slope_second_half_kib")
        # "Bounded by a constant per stream": growth is linear (the second half of the ramp
        # costs no more per stream than the first, within noise), not superlinear.
        linear = lo is not None and hi is not None and hi <= 1.5 * max(lo, 1.0) + 8
        add(
            f"RSS growth under {m['streams']} streams bounded per stream",
            f"{m['kib_per_stream']:.1f} KiB/stream (slopes {lo or 0:.1f} -> {hi or 0:.1f} KiB)",
            linear,
        )
    else:
        add(
            "RSS growth under 1,000 streams bounded per stream",
            "n/a" if not m else f"opened {m.get('opened')}/{m.get('streams')}",
            None if not m else False,
        )
    added = [(w, r["rules_added_cpu_ms"]) for w in chat if "rules_added_cpu_ms" in (r := ratios[w])]
    add(
        "rules (allow-lists, a rate limit, a budget; local store) add <= 0.3 ms CPU per request",
        ", ".join(f"{w}: {v:+.2f} ms" for w, v in added) or "n/a",
        all(v <= 0.3 for _, v in added) if added else None,
    )
    lvals = [(w, ratios[w].get("gateway_over_litellm_rps")) for w in chat]
    lhave = [(w, v) for w, v in lvals if v is not None]
    add(
        ">= 4 x LiteLLM throughput",
        ", ".join(f"{w}: {v:.1f}x" for w, v in lhave) or "n/a",
        all(v >= 4.0 for _, v in lhave) if lhave else None,
    )
    return out


def fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown(b: Bench, summary: dict[str, Any], info: dict[str, str]) -> str:
    """The tables that go into bench/README.md."""
    cells, ratios = summary["cells"], summary["ratios"]
    a = b.args
    lines = [
        f"Run {b.stamp}: {a.rounds} round(s) per workload, timed phase <= {a.duration:g} s and "
        f"<= {a.requests} requests per run; stream = {a.chunks} chunks x {a.chunk_delay_ms:g} ms.",
        "",
        f"Machine: {info['nproc']} cores ({info['cpu']}), {info['memory']}, Linux "
        f"{info['kernel']}, Python {info['python']}, mitmproxy {info['mitmproxy']}, "
        f"LiteLLM {info['litellm']}, gateway at commit {info['gateway_commit']}.",
        "",
        f"Gateway: audit log {'off' if a.no_audit else 'on'}, traces "
        + (
            f"on ({b.sink.spans} spans in {b.sink.requests} OTLP/HTTP exports, "
            f"{b.sink.bytes / 2**20:.1f} MiB, to a local sink that discards them)."
            if b.sink is not None
            else "off."
        ),
        "",
        "### Non-streaming chat completions",
        "",
        "| workload | scenario | req/s (median) | p50 ms | p90 ms | p99 ms | proxy CPU ms/req | "
        "peak RSS MiB | upstream conns/run | other load % | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w in WORKLOADS:
        if w.stream or w.name not in cells:
            continue
        for s, c in cells[w.name].items():
            rss = c["peak_rss_kib"] / 1024 if c["peak_rss_kib"] else None
            lines.append(
                f"| {w.name} | {s} | {fmt(c['rps_median'])} | {fmt(c['p50_ms'], 2)} | "
                f"{fmt(c['p90_ms'], 2)} | {fmt(c['p99_ms'], 2)} | "
                f"{fmt(c['proxy_cpu_ms_per_req'], 2)} | {fmt(rss, 0)} | "
                f"{max(c['upstream_conns_per_run'])} | {fmt(c['other_load_pct'], 0)} | "
                f"{c['errors']} |"
            )
    lines += [
        "",
        "### Streaming chat completions",
        "",
        "| workload | scenario | streams/s | TTFB p50 ms | TTFB p99 ms | total p50 ms | "
        "total p99 ms | "
        "chunk gap mean ms | gap p50 ms | gap p99 ms | proxy CPU ms/stream | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w in WORKLOADS:
        if not w.stream or w.name not in cells:
            continue
        for s, c in cells[w.name].items():
            lines.append(
                f"| {w.name} | {s} | {fmt(c['rps_median'])} | {fmt(c['ttfb_p50_ms'], 2)} | "
                f"{fmt(c['ttfb_p99_ms'], 2)} | {fmt(c['p50_ms'], 1)} | {fmt(c['p99_ms'], 1)} | "
                f"{fmt(c['gap_mean_ms'], 2)} | {fmt(c['gap_p50_ms'], 2)} | "
                f"{fmt(c['gap_p99_ms'], 2)} | {fmt(c['proxy_cpu_ms_per_req'], 2)} | "
                f"{c['errors']} |"
            )
    lines += [
        "",
        "### Memory (RSS of the proxy process)",
        "",
        "| scenario | idle MiB | peak during workloads MiB | streams held | RSS held MiB | "
        "KiB/stream | slope 1st/2nd half KiB/stream | after release MiB | peak (VmRSS) MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in SCENARIOS:
        if s == "direct" or s not in b.idle_rss:
            continue
        peaks = [c[s]["peak_rss_kib"] for c in cells.values() if s in c and c[s]["peak_rss_kib"]]
        m = b.memory.get(s, {})
        lines.append(
            f"| {s} | {b.idle_rss[s] / 1024:.0f} | "
            f"{fmt(max(peaks) / 1024 if peaks else None, 0)} | "
            f"{m.get('opened', '-')}/{m.get('streams', '-')} | "
            f"{fmt(m['rss_held_kib'] / 1024 if m else None, 0)} | "
            f"{fmt(m.get('kib_per_stream'))} | "
            f"{fmt(m.get('slope_first_half_kib'))} / {fmt(m.get('slope_second_half_kib'))} | "
            f"{fmt(m['rss_after_kib'] / 1024 if m else None, 0)} | "
            f"{fmt(m['peak_rss_kib'] / 1024 if m else None, 0)} |"
        )
    lines += [
        "",
        "### Ratios within this run",
        "",
        "| workload | gateway ÷ mitmdump req/s | gateway ÷ mitmdump CPU/req | "
        "gateway ÷ LiteLLM req/s | "
        "mitmdump ÷ LiteLLM req/s | added p50 / p99 vs mitmdump ms | "
        "gateway added p50 / p99 vs direct ms | "
        "mitmdump added p50 / p99 vs direct ms | added chunk gap vs mitmdump / direct ms | "
        "added TTFB p50 vs mitmdump / direct ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for wname, r in ratios.items():
        lines.append(
            f"| {wname} | {fmt(r.get('gateway_over_mitmdump_rps'), 2)} | "
            f"{fmt(r.get('gateway_over_mitmdump_cpu'), 2)} | "
            f"{fmt(r.get('gateway_over_litellm_rps'), 1)} | "
            f"{fmt(r.get('mitmdump_over_litellm_rps'), 1)} | "
            f"{fmt(r.get('added_p50_vs_mitmdump_ms'), 2)} / "
            f"{fmt(r.get('added_p99_vs_mitmdump_ms'), 2)} | "
            f"{fmt(r.get('gateway_added_p50_vs_direct_ms'), 2)} / "
            f"{fmt(r.get('gateway_added_p99_vs_direct_ms'), 2)} | "
            f"{fmt(r.get('mitmdump_added_p50_vs_direct_ms'), 2)} / "
            f"{fmt(r.get('mitmdump_added_p99_vs_direct_ms'), 2)} | "
            f"{fmt(r.get('added_gap_vs_mitmdump_ms'), 2)} / "
            f"{fmt(r.get('gateway_added_gap_vs_direct_ms'), 2)} | "
            f"{fmt(r.get('added_ttfb_vs_mitmdump_ms'), 2)} / "
            f"{fmt(r.get('gateway_added_ttfb_vs_direct_ms'), 2)} |"
        )
    rules_rows = [
        (w.name, cells[w.name]["gateway"], cells[w.name]["rules"], ratios[w.name])
        for w in WORKLOADS
        if w.name in cells and {"gateway", "rules"} <= cells[w.name].keys()
    ]
    if rules_rows:
        lines += [
            "",
            "### What the rules cost (gateway with the bench policy vs without rules)",
            "",
            "| workload | gateway CPU ms/req | rules CPU ms/req | added CPU ms/req | "
            "gateway req/s | rules req/s | added p50 ms |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for wname, gw, rl, r in rules_rows:
            lines.append(
                f"| {wname} | {fmt(gw['proxy_cpu_ms_per_req'], 2)} | "
                f"{fmt(rl['proxy_cpu_ms_per_req'], 2)} | {fmt(r.get('rules_added_cpu_ms'), 2)} | "
                f"{fmt(gw['rps_median'])} | {fmt(rl['rps_median'])} | "
                f"{fmt(r.get('rules_added_p50_ms'), 2)} |"
            )
    lines += ["", "### Targets", "", "| target | measured | met |", "|---|---|---|"]
    for t in summary["targets"]:
        verdict = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['target']} | {t['measured']} | {verdict} |")
    if b.skipped:
        lines += ["", "Skipped scenarios:"]
        lines += [f"- {k}: {v}" for k, v in b.skipped.items()]
    direct = cells.get("chat c=1", {}).get("direct")
    if direct:
        mock_ms = fmt(direct["mock_cpu_ms_per_req"], 3)
        client_ms = fmt(direct["client_cpu_ms_per_req"], 3)
        lines += [
            "",
            f"The mock alone (direct, c=1) costs {mock_ms} ms CPU per request and the "
            f"client {client_ms} ms.",
        ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="1 round, 2 s runs, 200 long streams: a smoke run of the whole thing",
    )
    p.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 3)))
    p.add_argument(
        "--duration",
        type=float,
        default=float(os.environ.get("BENCH_DURATION", 6)),
        help="cap on each timed phase, seconds",
    )
    p.add_argument(
        "--requests",
        type=int,
        default=int(os.environ.get("BENCH_REQUESTS", 20000)),
        help="cap on requests per timed phase",
    )
    p.add_argument(
        "--streams",
        type=int,
        default=int(os.environ.get("BENCH_STREAMS", 1000)),
        help="concurrent long streams in the memory test (0: skip it)",
    )
    p.add_argument(
        "--ramp-cap", type=float, default=90.0, help="seconds to wait for all long streams to open"
    )
    p.add_argument("--hold-cap", type=float, default=240.0)
    p.add_argument("--chunks", type=int, default=20)
    p.add_argument("--chunk-delay-ms", type=float, default=5.0)
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument(
        "--announce",
        action="store_true",
        help="let the gateway print its line per request (it runs with --quiet otherwise)",
    )
    p.add_argument("--workloads", default=",".join(w.name for w in WORKLOADS))
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the gateway and mitmdump under chat c=16 after the table",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=float(os.environ.get("BENCH_WAIT_QUIET", 10)),
        help="before each round, wait up to this many seconds for other processes "
        "to use < 25%% of the machine (0: don't wait)",
    )
    p.add_argument(
        "--readme",
        action="store_true",
        help="put this run's tables into bench/README.md (between its markers)",
    )
    p.add_argument("--base-port", type=int, default=int(os.environ.get("BENCH_BASE_PORT", 18440)))
    p.add_argument(
        "--no-audit",
        action="store_true",
        help="run the gateway with [audit] enabled = false (to measure what the audit log costs)",
    )
    p.add_argument(
        "--traces",
        action="store_true",
        help="run the gateway with [traces] on, exporting every span over OTLP/HTTP to a local "
        "sink that discards them (base port + 5; to measure what tracing costs)",
    )
    a = p.parse_args(argv)
    if a.quick:
        a.rounds, a.duration, a.wait_quiet = 1, min(a.duration, 2.0), 0.0
        a.streams = min(a.streams, 200)
    a.scenarios = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    unknown = set(a.scenarios) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    a.workloads = [s.strip() for s in a.workloads.split(",") if s.strip()]
    return a


README_START = "<!-- results:start (written by run_bench.py --readme) -->"
README_END = "<!-- results:end -->"


def update_readme(md: str) -> None:
    """Replace the tables between the markers in bench/README.md."""
    readme = BENCH / "README.md"
    text = readme.read_text()
    head, sep, rest = text.partition(README_START)
    _, sep2, tail = rest.partition(README_END)
    if not sep or not sep2:
        print("bench: README.md has no results markers; not updated", file=sys.stderr)
        return
    readme.write_text(f"{head}{README_START}\n{md}{README_END}{tail}")


@contextlib.contextmanager
def running(b: Bench) -> Iterator[Bench]:
    try:
        b.start()
        yield b
    finally:
        b.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    b = Bench(args)
    print(f"bench: results in {b.work}", flush=True)
    t0 = time.monotonic()
    with running(b):
        print(
            f"bench: scenarios {', '.join(b.targets)}; idle RSS "
            + ", ".join(f"{k}={v / 1024:.0f} MiB" for k, v in b.idle_rss.items()),
            flush=True,
        )
        for k, v in b.skipped.items():
            print(f"bench: skipped {k}: {v}", flush=True)
        b.run_workloads()
        if args.streams > 0:
            b.run_memory()
        if args.profile:
            w = next(w for w in WORKLOADS if w.name == "chat c=16")
            for name in ("gateway", "rules", "mitmdump"):
                b.profile(name, w, 12)
    info = machine()
    info["gateway_commit"] = getattr(b, "gateway_code", info["gateway_commit"])
    summary = summarise(b)
    md = markdown(b, summary, info)
    result = {
        "stamp": b.stamp,
        "machine": info,
        "args": {k: v for k, v in vars(args).items()},
        "skipped": b.skipped,
        "idle_rss_kib": b.idle_rss,
        "memory": b.memory,
        "runs": [{k: v for k, v in vars(r).items() if k != "raw"} for r in b.runs],
        **summary,
        "wall_s": time.monotonic() - t0,
    }
    out = BENCH / "results" / f"{b.stamp}.json"
    out.write_text(json.dumps(result, indent=1, default=str))
    (BENCH / "results" / f"{b.stamp}.md").write_text(md)
    (b.work / "loadgen.log.tmp").unlink(missing_ok=True)
    if args.readme:
        update_readme(md)
    print()
    print(md)
    print(f"bench: wrote {out} and {out.with_suffix('.md')} in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
