"""One proxy's clients in a many-proxy test: the official openai SDK in threads, in its own
process, configured only by the environment `lmk env` prints (HTTPS_PROXY, the CA, the key).

    python tests/sdk_load.py burst --calls N --threads T --model M [--stream] [--tag TAG]
    python tests/sdk_load.py loop --threads T --model M --out FILE --stop FILE [--tag TAG]

``burst`` makes the client, prints ``ready``, waits for a line on stdin (so the clients of
every proxy start together), sends N calls over T threads at once and prints one JSON list of
outcomes. ``loop`` sends calls on T
threads one after the other until FILE ``--stop`` exists (or ``--deadline`` seconds or
``--max-calls`` have passed), appending one JSON outcome per line to ``--out`` as each ends.

An outcome: ``ok``, ``status``, ``error`` (the SDK's exception class), ``refused`` (the
``x-lmk-refused`` header), ``retry_after``, ``should_retry`` (``x-should-retry``),
``message``, and ``t0`` / ``t1`` (wall clock at the call's start and end). ``--tag`` goes in an
``x-load-tag`` header, so the mock provider can tell which proxy's clients sent what reached it.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai

MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


def one_call(client: openai.OpenAI, model: str, stream: bool, tag: str) -> dict[str, Any]:
    t0 = time.time()
    outcome: dict[str, Any] = {"ok": False, "t0": t0}
    headers = {"x-load-tag": tag}
    try:
        if stream:
            chunks = client.chat.completions.create(
                model=model,
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
                extra_headers=headers,
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            outcome.update(ok=bool(text), status=200)
        else:
            answer = client.chat.completions.create(
                model=model, messages=MESSAGES, extra_headers=headers
            )
            outcome.update(ok=bool(answer.choices), status=200)
    except openai.APIStatusError as error:
        outcome.update(
            status=error.status_code,
            error=type(error).__name__,
            refused=error.response.headers.get("x-lmk-refused"),
            retry_after=error.response.headers.get("retry-after"),
            should_retry=error.response.headers.get("x-should-retry"),
            message=error.message,
        )
    except openai.APIError as error:  # no answer at all (a connection error, a timeout)
        outcome.update(status=None, error=type(error).__name__, message=str(error))
    outcome["t1"] = time.time()
    return outcome


def burst(client: openai.OpenAI, args: argparse.Namespace) -> None:
    print("ready", flush=True)
    sys.stdin.readline()
    with ThreadPoolExecutor(args.threads) as pool:
        outcomes = list(
            pool.map(
                lambda _: one_call(client, args.model, args.stream, args.tag), range(args.calls)
            )
        )
    print(json.dumps(outcomes), flush=True)


def loop(client: openai.OpenAI, args: argparse.Namespace) -> None:
    stop, deadline = Path(args.stop), time.monotonic() + args.deadline
    calls = iter(range(args.max_calls))
    lock = threading.Lock()
    with open(args.out, "a", buffering=1) as out:

        def worker() -> None:
            while not stop.exists() and time.monotonic() < deadline:
                with lock:
                    if next(calls, None) is None:
                        return
                outcome = one_call(client, args.model, args.stream, args.tag)
                with lock:
                    out.write(json.dumps(outcome) + "\n")

        threads = [threading.Thread(target=worker) for _ in range(args.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["burst", "loop"])
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--tag", default="")
    parser.add_argument("--out", default="")
    parser.add_argument("--stop", default="")
    parser.add_argument("--deadline", type=float, default=30.0)
    parser.add_argument("--max-calls", type=int, default=2000)
    args = parser.parse_args()
    # No SDK retries: each outcome is one request's answer. A short timeout: a hung proxy is
    # an outcome too, not a stuck test.
    client = openai.OpenAI(max_retries=0, timeout=15.0)
    burst(client, args) if args.mode == "burst" else loop(client, args)


if __name__ == "__main__":
    main()
