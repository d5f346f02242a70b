"""What the rules cost per request, in-process: the authorize step and the settlement after the
answer, with the policy of the bench's "rules" scenario (`run_bench.POLICY`: endpoint and model
allow-lists, a rate limit and a budget on the user, the local store) and without rules.

    .venv/bin/python bench/rules_cost.py [--requests N] [--rounds R] [--profile]

The end-to-end figure (`run_bench.py`, scenario "rules" against "gateway") is the one that
counts, but a difference of a few hundredths of a millisecond is within its noise on a shared
machine; this measures the same code alone, with CPU time (`time.process_time`), on one event
loop. ``--profile`` prints a cProfile of the policy run's own functions.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import json
import pstats
import sys
import time
import tomllib
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "addons"))
sys.path.insert(0, str(BENCH))

from mitmproxy import http  # noqa: E402
from mitmproxy.test import tflow  # noqa: E402
from run_bench import POLICY, USER_POLICY  # noqa: E402

from llamakey import config, credentials  # noqa: E402
from llamakey.state import GatewayState  # noqa: E402
from llamakey.steps.authenticate import Authenticate  # noqa: E402
from llamakey.steps.authorize import Authorize  # noqa: E402
from llamakey.steps.identify import IdentifyProvider  # noqa: E402
from llamakey.steps.ratelimit import RateLimits  # noqa: E402
from llamakey.usage import Usage  # noqa: E402

CHAT = "https://api.openai.com/v1/chat/completions"
# The body bench/loadgen.py sends.
BODY = json.dumps(
    {
        "model": "gpt-4o-mini",
        "max_tokens": 32,
        "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
    }
).encode()


def gateway_state(rules: bool, key: str) -> GatewayState:
    digest = hashlib.sha256(key.encode()).hexdigest()
    text = f"""
[providers.openai]
keys = ["sk-bench-real-key"]
{POLICY if rules else ""}
[users.bench]
key_sha256 = "{digest}"
{USER_POLICY if rules else ""}"""
    state = GatewayState()
    state.install(config.resolve(config.parse(tomllib.loads(text)), None))
    return state


async def per_request_us(rules: bool, n: int, profile: cProfile.Profile | None = None) -> float:
    """CPU microseconds per request of Authorize.request (awaited) and RateLimits.response."""
    key = credentials.new_master_key()
    state = gateway_state(rules, key)
    limits = RateLimits(state)
    authorize = Authorize(state, limits)
    identify, authenticate = IdentifyProvider(state), Authenticate(state)
    flows = []
    for _ in range(n):  # built outside the timed part
        request = http.Request.make("POST", CHAT, BODY, {"authorization": f"Bearer {key}"})
        flow = tflow.tflow(req=request)
        flow.client_conn.sni = "api.openai.com"
        flow.server_conn.address = ("api.openai.com", 443)
        identify.requestheaders(flow)
        authenticate.requestheaders(flow)
        identify.request(flow)
        flows.append((flow, http.Response.make(200, b"{}")))
    if profile is not None:
        profile.enable()
    started = time.process_time()
    for flow, response in flows:
        pending = authorize.request(flow)
        if pending is not None:
            await pending
        fs = state.flows(flow)
        if not fs.authorized:
            raise SystemExit(f"refused: {fs.refusal}")
        fs.audited = True  # as the write-ahead step marks it
        flow.response = response
        fs.usage = Usage(input_tokens=19, output_tokens=32)
        fs.cost_usd = 0.0000221
        pending = limits.response(flow)
        if pending is not None:
            await pending
    elapsed = time.process_time() - started
    if profile is not None:
        profile.disable()
    await limits.done()
    return elapsed / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    added = []
    for _ in range(args.rounds):
        without = asyncio.run(per_request_us(False, args.requests))
        with_rules = asyncio.run(per_request_us(True, args.requests))
        added.append(with_rules - without)
        print(
            f"authorize + settle: no rules {without:.1f} us/request, bench policy "
            f"{with_rules:.1f} us/request: the rules add {with_rules - without:.1f} us",
            flush=True,
        )
    print(f"median added: {sorted(added)[len(added) // 2]:.1f} us per request")
    if args.profile:
        profile = cProfile.Profile()
        asyncio.run(per_request_us(True, args.requests, profile))
        stats = pstats.Stats(profile).sort_stats("cumulative")
        stats.print_stats("llamakey", 30)


if __name__ == "__main__":
    main()
