"""What the `lmk audit browse` tests share: an audit database with known rows, written by the
real audit writer, the answer every canned query must give on it, and a real `lmk audit
browse` process with a client that logs in through the address it prints."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llamakey.audit import AuditWriter, RequestEnd, RequestStart
from tests.harness import LMK, free_port, wait_until
from tests.unit.audit.helpers import done, row

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
METADATA_FILE = REPO / "addons" / "llamakey" / "audit" / "datasette.yaml"


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2025, 1, day, hour, minute, tzinfo=UTC)


def ts(day: int, hour: int, minute: int = 0) -> str:
    return f"2025-01-{day:02d}T{hour:02d}:{minute:02d}:00.000Z"


ENG_ML = ("eng", "ml")
OPS = ("ops",)

#: The known rows, as the proxy writes them: write-ahead start, then completion (None: still
#: in flight). Costs are exact in binary, so sums compare exactly.
KNOWN_ROWS: list[tuple[RequestStart, RequestEnd | None]] = [
    (
        row("a1", user="alice", groups=ENG_ML, ts=at(1, 10)),
        done(
            status=200,
            input_tokens=100,
            output_tokens=10,
            cache_read_tokens=5,
            cost_usd=0.25,
            latency_ms=1200.0,
            ttfb_ms=300.0,
            finish_reason="stop",
        ),
    ),
    (
        row(
            "a2",
            user="alice",
            groups=ENG_ML,
            provider="anthropic",
            host="api.anthropic.com",
            path="/v1/messages",
            model="claude-sonnet-4",
            stream=False,
            ts=at(2, 10),
        ),
        done(
            status=200,
            input_tokens=200,
            output_tokens=20,
            cache_write_tokens=7,
            cost_usd=0.5,
            latency_ms=800.0,
            ttfb_ms=100.0,
        ),
    ),
    (
        row("b1", user="bob", groups=OPS, model="gpt-4o-mini", ts=at(2, 11)),
        # a model without a known price: cost NULL, counted as unpriced
        done(status=200, input_tokens=50, output_tokens=5, latency_ms=3000.0, ttfb_ms=2500.0),
    ),
    (
        row(
            "b2",
            user="bob",
            groups=OPS,
            model="gpt-4o-mini",
            ts=at(3, 9),
            refused_by="no_provider_key",
        ),
        done(status=503, latency_ms=2.0),
    ),
    (
        row("x1", user=None, groups=None, ts=at(3, 9, 30), refused_by="unknown_master_key"),
        done(status=401, latency_ms=1.0),
    ),
    (
        row("c1", user="carol", groups=None, model="gpt-4o-mini", ts=at(3, 12)),
        done(
            status=200,
            input_tokens=10,
            output_tokens=1,
            cost_usd=0.125,
            latency_ms=50.0,
            ttfb_ms=20.0,
        ),
    ),
    (
        row(
            "b3",
            user="bob",
            groups=OPS,
            provider=None,
            host="example.com",
            path="/",
            model=None,
            ts=at(3, 13),
            refused_by="blocked_host",
        ),
        done(status=403, latency_ms=0.5),
    ),
    (row("a3", user="alice", groups=ENG_ML, ts=at(3, 14)), None),  # in flight: not unpriced
]


def write_known_rows(path: Path) -> Path:
    """The known rows, through the real audit writer, into a new database at ``path``."""
    writer = AuditWriter(path)
    writer.start()
    try:
        for start, end in KNOWN_ROWS:
            writer.begin(start).result(5)
            if end is not None:
                writer.finish(start.id, end)
        writer.flush()
    finally:
        writer.close()
    return path


def _spend(key: str, value: object, *counts: int, cost: float, unpriced: int) -> dict[str, Any]:
    requests, refused, input_tokens, output_tokens, cache_read, cache_write = counts
    return {
        key: value,
        "requests": requests,
        "refused": refused,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_tokens": cache_read,
        "cache_write_tokens": cache_write,
        "cost_usd": cost,
        "unpriced": unpriced,
    }


def _slow(request_id: str, latency: float) -> dict[str, Any]:
    return {"id": request_id, "latency_ms": latency}


#: What each canned query answers on the known rows (for ``slowest_requests`` and
#: ``user_day``: the columns that identify the rows, in order; see ``QUERY_PARAMS``).
EXPECTED: dict[str, list[dict[str, Any]]] = {
    "spend_by_user": [
        _spend("user", "alice", 3, 0, 300, 30, 5, 7, cost=0.75, unpriced=0),
        _spend("user", "carol", 1, 0, 10, 1, 0, 0, cost=0.125, unpriced=0),
        _spend("user", "bob", 3, 2, 50, 5, 0, 0, cost=0.0, unpriced=1),
        _spend("user", None, 1, 1, 0, 0, 0, 0, cost=0.0, unpriced=0),
    ],
    "spend_by_group": [
        _spend("group", "eng", 3, 0, 300, 30, 5, 7, cost=0.75, unpriced=0),
        _spend("group", "ml", 3, 0, 300, 30, 5, 7, cost=0.75, unpriced=0),
        _spend("group", None, 2, 1, 10, 1, 0, 0, cost=0.125, unpriced=0),
        _spend("group", "ops", 3, 2, 50, 5, 0, 0, cost=0.0, unpriced=1),
    ],
    "spend_by_model": [
        _spend("model", "claude-sonnet-4", 1, 0, 200, 20, 0, 7, cost=0.5, unpriced=0),
        _spend("model", "gpt-4o", 3, 1, 100, 10, 5, 0, cost=0.25, unpriced=0),
        _spend("model", "gpt-4o-mini", 3, 1, 60, 6, 0, 0, cost=0.125, unpriced=1),
        _spend("model", None, 1, 1, 0, 0, 0, 0, cost=0.0, unpriced=0),
    ],
    "spend_by_day": [
        _spend("day", "2025-01-01", 1, 0, 100, 10, 5, 0, cost=0.25, unpriced=0),
        _spend("day", "2025-01-02", 2, 0, 250, 25, 0, 7, cost=0.5, unpriced=1),
        _spend("day", "2025-01-03", 5, 3, 10, 1, 0, 0, cost=0.125, unpriced=0),
    ],
    "refusals_by_rule": [
        {
            "rule": "blocked_host",
            "requests": 1,
            "users": 1,
            "first_ts": ts(3, 13),
            "last_ts": ts(3, 13),
        },
        {
            "rule": "no_provider_key",
            "requests": 1,
            "users": 1,
            "first_ts": ts(3, 9),
            "last_ts": ts(3, 9),
        },
        {
            "rule": "unknown_master_key",
            "requests": 1,
            "users": 0,
            "first_ts": ts(3, 9, 30),
            "last_ts": ts(3, 9, 30),
        },
    ],
    "slowest_requests": [
        _slow("b1", 3000.0),
        _slow("a1", 1200.0),
        _slow("a2", 800.0),
        _slow("c1", 50.0),
        _slow("b2", 2.0),
        _slow("x1", 1.0),
        _slow("b3", 0.5),
    ],
    "user_day": [
        {"id": "b2", "ts": ts(3, 9), "status": 503, "refused_by": "no_provider_key"},
        {"id": "b3", "ts": ts(3, 13), "status": 403, "refused_by": "blocked_host"},
    ],
}

#: Parameters the parametrised queries are run with.
QUERY_PARAMS: dict[str, dict[str, str]] = {"user_day": {"user": "bob", "day": "2025-01-03"}}


def project(rows: list[dict[str, Any]], like: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` cut down to the columns the expected rows ``like`` name."""
    columns = list(like[0]) if like else []
    return [{c: r[c] for c in columns} for r in rows]


# --------------------------------------------------------------------------- README recipes

_RECIPE_HEADER = re.compile(r"^-- (\w+): (.+)$", re.MULTILINE)


def readme_recipes(text: str) -> dict[str, tuple[str, str]]:
    """The README's recipes (the ```sql block after "### Recipes"): name -> (title, SQL without
    its final semicolon)."""
    section = text.split("### Recipes", 1)[1]
    block = section.split("```sql\n", 1)[1].split("\n```", 1)[0]
    headers = list(_RECIPE_HEADER.finditer(block))
    recipes: dict[str, tuple[str, str]] = {}
    for here, after in zip(headers, [*headers[1:], None], strict=True):
        body = block[here.end() : after.start() if after else len(block)].strip()
        assert body.endswith(";"), f"recipe {here[1]} does not end with ';'"
        recipes[here[1]] = (here[2], body.removesuffix(";"))
    return recipes


# --------------------------------------------------------------------------- the process


class Forbidden(Exception):
    pass


@dataclass
class Browse:
    """One real `lmk audit browse` process, its temporary directory its own."""

    workdir: Path
    db: Path | None = None  # None: the configured audit.path
    config: Path | None = None
    port: int = field(default_factory=free_port)
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    url: str = ""

    @property
    def output(self) -> Path:
        return self.workdir / "browse.out"

    @property
    def tmpdir(self) -> Path:
        """Its $TMPDIR, where the snapshot goes."""
        return self.workdir / "tmp"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        args = [LMK]
        if self.config is not None:
            args += ["--config", str(self.config)]
        args += ["audit", "browse", "--port", str(self.port), *self.extra_args]
        if self.db is not None:
            args += ["--db", str(self.db)]
        return args

    def start(self) -> str:
        """Start it; return the address it prints, once it prints it."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.tmpdir.mkdir(exist_ok=True)
        env = {**os.environ, "TMPDIR": str(self.tmpdir)}
        with self.output.open("wb") as out:
            self.process = subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.workdir,
            )
        process = self.process
        wait_until(
            lambda: self._printed_url() or process.poll() is not None,
            "lmk audit browse to print its address",
            timeout=60,
        )
        url = self._printed_url()
        assert url, f"lmk audit browse exited {process.returncode}:\n{self.text()}"
        self.url = url
        return url

    def text(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def _printed_url(self) -> str:
        for line in self.text().splitlines():
            if line.startswith("http://"):
                return line.strip()
        return ""

    def stop(self) -> int | None:
        """SIGTERM, as a service manager would; its exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def opener(cookies: http.cookiejar.CookieJar | None = None) -> urllib.request.OpenerDirector:
    """A client that ignores proxy settings and keeps cookies."""
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}),
        urllib.request.HTTPCookieProcessor(
            http.cookiejar.CookieJar() if cookies is None else cookies
        ),
    )


class Client:
    """A browser of one `lmk audit browse`: logged in by opening the printed address."""

    def __init__(self, browse: Browse) -> None:
        self.browse = browse
        self.cookies = http.cookiejar.CookieJar()
        self.http = opener(self.cookies)
        with self.http.open(browse.url, timeout=30) as response:
            assert response.status == 200
            self.landed = response.url

    def get(self, path: str) -> bytes:
        try:
            with self.http.open(self.browse.base + path, timeout=30) as response:
                body: bytes = response.read()
                return body
        except urllib.error.HTTPError as error:
            if error.code == 403:
                raise Forbidden(path) from None
            raise

    def json(self, path: str) -> Any:
        return json.loads(self.get(path))

    def query(self, database: str, name: str, **params: str) -> list[dict[str, Any]]:
        """A canned query's rows, through Datasette's JSON API."""
        query = urllib.parse.urlencode({**params, "_shape": "array"})
        rows: list[dict[str, Any]] = self.json(f"/{database}/{name}.json?{query}")
        return rows
