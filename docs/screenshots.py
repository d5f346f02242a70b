"""Screenshots of `lmk audit browse` for the README: docs/browse-*.png.

Writes a demo audit database with the real audit writer (a week of a small team's requests,
fixed seed), starts `lmk audit browse` on it, and takes one screenshot per page (the database
page, then each canned query) with headless Chromium, 1280x900.

    python docs/screenshots.py            # needs `pip install -e '.[browse]'` and chromium
    python docs/screenshots.py --out DIR  # elsewhere than docs/

Each Chromium run opens the page with the access token, as the printed address does: the gate
sets its cookie and redirects to the page itself.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode, urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "addons"))

from llamakey.audit import AuditWriter, RequestEnd, RequestStart  # noqa: E402
from llamakey.browse.gate import TOKEN_PARAM  # noqa: E402
from llamakey.browse.metadata import canned_queries, load_metadata  # noqa: E402

USERS = {
    "alice": ("research",),
    "bob": ("ops",),
    "carol": ("research", "ops"),
    "dave": None,
}
# model -> (provider, host, path, USD per input token, USD per output token); None: unpriced
MODELS: dict[str, tuple[str, str, str, tuple[float, float] | None]] = {
    "gpt-4o-mini": ("openai", "api.openai.com", "/v1/chat/completions", (0.15e-6, 0.6e-6)),
    "gpt-4o": ("openai", "api.openai.com", "/v1/chat/completions", (2.5e-6, 10e-6)),
    "claude-sonnet-4": ("anthropic", "api.anthropic.com", "/v1/messages", (3e-6, 15e-6)),
    "gemini-2.0-flash": (
        "gemini",
        "generativelanguage.googleapis.com",
        "/v1beta/models/gemini-2.0-flash:generateContent",
        (0.1e-6, 0.4e-6),
    ),
    "acme-finetune-7b": ("together", "api.together.xyz", "/v1/chat/completions", None),
}
REFUSALS = {
    "unknown_master_key": 401,
    "no_provider_key": 503,
    "blocked_host": 403,
    "misdirected": 421,
}
START = datetime(2025, 1, 27, 8, tzinfo=UTC)
PAGE_USER_DAY = {"user": "carol", "day": "2025-01-29"}


def demo_database(path: Path, rows: int = 160) -> None:
    rng = random.Random(7)
    writer = AuditWriter(path)
    writer.start()
    try:
        for n in range(rows):
            user = rng.choice(list(USERS))
            model = rng.choices(list(MODELS), weights=[8, 3, 4, 3, 1])[0]
            provider, host, api_path, price = MODELS[model]
            ts = START + timedelta(days=n * 5 // rows, minutes=rng.randrange(9 * 60))
            refused = rng.choice(list(REFUSALS)) if rng.random() < 0.08 else None
            stream = rng.random() < 0.6
            start = RequestStart(
                id=f"demo-{n:04d}",
                ts=ts,
                user=None if refused == "unknown_master_key" else user,
                groups=None if refused == "unknown_master_key" else USERS[user],
                client_addr=f"10.0.0.{11 + list(USERS).index(user)}",
                provider=None if refused == "blocked_host" else provider,
                host="example.com" if refused == "blocked_host" else host,
                method="POST",
                path=api_path,
                model=None if refused == "blocked_host" else model,
                stream=stream,
                request_bytes=rng.randrange(200, 6000),
                refused_by=refused,
            )
            writer.begin(start).result(5)
            if refused:
                end = RequestEnd(
                    status=REFUSALS[refused],
                    latency_ms=round(rng.uniform(0.3, 3), 2),
                    completed_ts=ts + timedelta(milliseconds=2),
                )
            else:
                input_tokens = rng.randrange(20, 4000)
                output_tokens = rng.randrange(5, 1200)
                cache_read = rng.choice([0, 0, 0, rng.randrange(100, 2000)])
                latency = round(rng.uniform(250, 9000) * (output_tokens / 600 + 0.3), 1)
                end = RequestEnd(
                    status=200,
                    latency_ms=latency,
                    ttfb_ms=round(latency * rng.uniform(0.05, 0.4), 1),
                    response_bytes=rng.randrange(300, 20000),
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    cache_read_tokens=cache_read or None,
                    cost_usd=(
                        None
                        if price is None
                        else input_tokens * price[0]
                        + cache_read * price[0] / 10
                        + output_tokens * price[1]
                    ),
                    response_model=model,
                    finish_reason="stop",
                    completed_ts=ts + timedelta(milliseconds=latency),
                )
            writer.finish(start.id, end)
        writer.flush()
    finally:
        writer.close()


def pages(database: str) -> dict[str, str]:
    """Screenshot name -> path (with its query string) on the Datasette instance."""
    found = {"database": f"/{database}"}
    for name in canned_queries(load_metadata()):
        params = PAGE_USER_DAY if name == "user_day" else {}
        found[name] = f"/{database}/{name}" + (f"?{urlencode(params)}" if params else "")
    return found


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    raise SystemExit("screenshots.py: no chromium on PATH (apt-get install chromium)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="where the PNGs go (docs/)")
    args = parser.parse_args()
    browser = chromium()
    lmk = Path(sys.executable).parent / "lmk"
    with tempfile.TemporaryDirectory(prefix="lmk-screenshots-") as tmp:
        db = Path(tmp) / "lmk_audit.db"
        demo_database(db)
        log = Path(tmp) / "browse.out"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(lmk), "audit", "browse", "--db", str(db), "--port", "0"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            url = ""
            deadline = time.monotonic() + 60
            while not url:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"lmk audit browse did not start:\n{log.read_text()}")
                url = next((ln for ln in log.read_text().splitlines() if ln.startswith("http")), "")
                time.sleep(0.1)
            address = urlsplit(url)
            token = dict(p.split("=", 1) for p in address.query.split("&"))[TOKEN_PARAM]
            base = f"{address.scheme}://{address.netloc}"
            profile = Path(tmp) / "chromium"
            args.out.mkdir(parents=True, exist_ok=True)
            for name, path in pages(db.stem).items():
                target = args.out / f"browse-{name}.png"
                joiner = "&" if "?" in path else "?"
                subprocess.run(
                    [
                        browser,
                        "--headless",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--hide-scrollbars",
                        "--no-first-run",
                        f"--user-data-dir={profile}",
                        "--window-size=1280,900",
                        f"--screenshot={target}",
                        f"{base}{path}{joiner}{TOKEN_PARAM}={token}",
                    ],
                    check=True,
                    capture_output=True,
                    timeout=120,
                    env={**os.environ, "TZ": "UTC"},
                )
                print(target)
        finally:
            process.terminate()
            process.wait(20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
