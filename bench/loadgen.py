"""A bounded, keep-alive load generator for the benchmark (loopback targets only).

It plays the part of an SDK client: each worker owns one keep-alive connection and sends
requests on it one after another. Three ways to reach the upstream:

* ``direct``  - TLS straight to the mock (SNI ``api.openai.com``), the baseline;
* ``connect`` - ``CONNECT api.openai.com:443`` through an HTTP proxy, then TLS inside the tunnel
  verified against the proxy's CA, as ``HTTPS_PROXY`` makes the official SDKs do;
* ``reverse`` - plain HTTP to a reverse proxy by base URL (LiteLLM's client path).

Stdlib only (asyncio + ssl), so any Python 3.12 runs it and it costs the shared CPUs little.

Phases, so that the caller can measure only the steady state: open every connection (CONNECT
+ TLS) and send ``--warmup`` requests on each, print ``READY``, wait for a ``GO`` line on
stdin (with ``--wait-go``), run the timed phase, print ``DONE``, then one line of JSON with
the results. The timed phase is bounded both by ``--requests`` (total over all workers) and by
``--duration`` seconds.

``--hold`` mode is for the memory test: every worker starts one long stream (model
``bench-long``) and reports ``OPEN <n>`` lines as streams reach their first event, ``HELD``
once all are open, then reads them until the mock ends them.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import resource
import ssl
import sys
import time
from dataclasses import dataclass, field
from typing import Any

_LOOPBACK_PREFIXES = ("127.", "::1", "localhost")


@dataclass
class Results:
    """Everything measured in the timed phase (milliseconds unless the name says otherwise)."""

    ok: int = 0
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    error_kinds: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    ttfb: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    reconnects: int = 0

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


class Client:
    """One keep-alive connection and the requests sent on it."""

    def __init__(self, args: argparse.Namespace, body: bytes) -> None:
        self.args = args
        self.body = body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        host = args.host_header
        # The request head never changes, so build it once.
        headers = [
            f"POST {args.path} HTTP/1.1",
            f"Host: {host}",
            "User-Agent: lmk-bench/1",
            "Content-Type: application/json",
            "Accept: " + ("text/event-stream" if args.stream else "application/json"),
            f"Content-Length: {len(body)}",
        ]
        headers += args.header
        self.request = ("\r\n".join(headers) + "\r\n\r\n").encode() + body

    async def connect(self, ctx: ssl.SSLContext | None) -> None:
        """Open the connection as the selected mode says (CONNECT tunnel, TLS, plain)."""
        a = self.args
        if a.mode == "direct":
            self.reader, self.writer = await asyncio.open_connection(
                a.addr_host, a.addr_port, ssl=ctx, server_hostname=a.sni
            )
        elif a.mode == "reverse":
            self.reader, self.writer = await asyncio.open_connection(a.addr_host, a.addr_port)
        else:
            reader, writer = await asyncio.open_connection(a.addr_host, a.addr_port)
            connect = f"CONNECT {a.tunnel} HTTP/1.1\r\nHost: {a.tunnel}\r\n"
            connect += "".join(h + "\r\n" for h in a.connect_header) + "\r\n"
            writer.write(connect.encode())
            head = await reader.readuntil(b"\r\n\r\n")
            status = head.split(b" ", 2)[1]
            if status != b"200":
                writer.close()
                raise ConnectionError(f"CONNECT answered {status.decode()}")
            assert ctx is not None
            await writer.start_tls(ctx, server_hostname=a.sni)
            self.reader, self.writer = reader, writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def one(self, res: Results | None, ctx: ssl.SSLContext | None) -> bool:
        """Send one request and read the whole answer; record timings into ``res``."""
        if self.writer is None:
            await self.connect(ctx)
            if res is not None:
                res.reconnects += 1
        reader, writer = self.reader, self.writer
        assert reader is not None and writer is not None
        t0 = time.perf_counter()
        writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = head[9:12].decode()
        length = -1
        chunked = False
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        events: list[float] = []
        if chunked:
            pending = b""
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0], 16)
                data = await reader.readexactly(size + 2)
                if size == 0:
                    # Trailers are not used by any of the targets; the 0-chunk ends with CRLF.
                    break
                now = time.perf_counter()
                pending += data[:-2]
                # Time the content events (the deltas), not the bookkeeping events that the
                # mock sends together with the last one; a TCP read may carry several events.
                while b"\n\n" in pending:
                    event, pending = pending.split(b"\n\n", 1)
                    if (b'"delta"' in event and b'"content"' in event) or b"text_delta" in event:
                        events.append(now)
        elif length >= 0:
            await reader.readexactly(length)
        else:
            await reader.read()
            close = True
        t1 = time.perf_counter()
        if close:
            self.close()
        if res is None:
            return status == "200"
        if status != "200":
            res.statuses[status] = res.statuses.get(status, 0) + 1
            res.error(f"http_{status}")
            return False
        res.statuses[status] = res.statuses.get(status, 0) + 1
        res.ok += 1
        res.latencies.append((t1 - t0) * 1000.0)
        if self.args.stream:
            if events:
                res.ttfb.append((events[0] - t0) * 1000.0)
                res.gaps.extend((b - a) * 1000.0 for a, b in itertools.pairwise(events))
            else:
                res.error("no_events")
        return True


def _ssl_context(cafile: str | None) -> ssl.SSLContext | None:
    if cafile is None:
        return None
    ctx = ssl.create_default_context(cafile=cafile)
    # What httpx offers by default; keeps every hop on HTTP/1.1 for a like-for-like comparison.
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _body(args: argparse.Namespace) -> bytes:
    obj: dict[str, Any] = {"model": args.model, "max_tokens": 32}
    if args.path.endswith("/messages"):
        obj["messages"] = [{"role": "user", "content": "Say hello."}]
    else:
        obj["messages"] = [
            {"role": "system", "content": "You are a benchmark."},
            {"role": "user", "content": "Say hello."},
        ]
    if args.stream:
        obj["stream"] = True
        if not args.path.endswith("/messages"):
            obj["stream_options"] = {"include_usage": True}
    return json.dumps(obj).encode()


async def _open_all(
    clients: list[Client], ctx: ssl.SSLContext | None, parallel: int
) -> list[Client]:
    """Open connections with bounded parallelism (a storm of handshakes measures nothing)."""
    sem = asyncio.Semaphore(parallel)
    opened: list[Client] = []

    async def open_one(c: Client) -> None:
        async with sem:
            try:
                await c.connect(ctx)
                opened.append(c)
            except (OSError, ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as e:
                print(f"connect failed: {e!r}", file=sys.stderr)

    await asyncio.gather(*(open_one(c) for c in clients))
    return opened


async def _wait_go() -> None:
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    if line.strip() != "GO":
        raise SystemExit("expected GO on stdin")


async def run_load(args: argparse.Namespace) -> dict[str, Any]:
    """Warm up, then run the timed phase and return the results."""
    ctx = _ssl_context(args.ca)
    body = _body(args)
    clients = await _open_all([Client(args, body) for _ in range(args.concurrency)], ctx, 64)
    if not clients:
        raise SystemExit("no connection could be opened")
    for _ in range(args.warmup):
        await asyncio.gather(*(c.one(None, ctx) for c in clients), return_exceptions=True)
    print("READY", flush=True)
    if args.wait_go:
        await _wait_go()
    res = Results()
    remaining = args.requests
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t_start = time.perf_counter()
    deadline = t_start + args.duration
    t_last = t_start

    async def worker(c: Client) -> None:
        nonlocal remaining, t_last
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            try:
                await asyncio.wait_for(c.one(res, ctx), args.timeout)
            except (
                OSError,
                ConnectionError,
                ssl.SSLError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                TimeoutError,
                ValueError,
            ) as e:
                res.error(type(e).__name__)
                c.close()
            t_last = time.perf_counter()

    await asyncio.gather(*(worker(c) for c in clients))
    elapsed = max(t_last - t_start, 1e-9)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    print("DONE", flush=True)
    for c in clients:
        c.close()
    return {
        "ok": res.ok,
        "errors": res.errors,
        "error_kinds": res.error_kinds,
        "statuses": res.statuses,
        "connections": len(clients),
        "reconnects": res.reconnects,
        "elapsed_s": elapsed,
        "client_cpu_s": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
        "latencies_ms": [round(x, 4) for x in res.latencies],
        "ttfb_ms": [round(x, 4) for x in res.ttfb],
        "gaps_ms": [round(x, 4) for x in res.gaps],
    }


async def run_hold(args: argparse.Namespace) -> dict[str, Any]:
    """Hold ``--concurrency`` long streams open at once (memory test)."""
    ctx = _ssl_context(args.ca)
    body = _body(args)
    res = Results()
    opened = 0
    milestones = sorted({int(m) for m in args.milestones.split(",") if m} | {args.concurrency})
    sem = asyncio.Semaphore(args.handshake_parallel)
    t0 = time.perf_counter()

    async def hold_one(c: Client) -> None:
        nonlocal opened
        try:
            async with sem:
                await c.connect(ctx)
                assert c.reader is not None and c.writer is not None
                c.writer.write(c.request)
                head = await c.reader.readuntil(b"\r\n\r\n")
                if head[9:12] != b"200":
                    res.error(f"http_{head[9:12].decode()}")
                    c.close()
                    return
                # The first event: the stream is now open end to end.
                first = await c.reader.readuntil(b"\n\n")
                if b"data:" not in first:
                    res.error("no_events")
            opened += 1
            if opened in milestones:
                print(f"OPEN {opened}", flush=True)
            reader = c.reader
            while True:
                line = await reader.readuntil(b"\r\n")
                if line == b"0\r\n":
                    # Either a last-chunk or a data line that happens to read "0"; the mock's
                    # events never do, so this ends the stream.
                    break
            res.ok += 1
        except (
            OSError,
            ConnectionError,
            ssl.SSLError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
        ) as e:
            res.error(type(e).__name__)
        finally:
            c.close()

    tasks = [asyncio.create_task(hold_one(Client(args, body))) for _ in range(args.concurrency)]

    async def announce() -> None:
        # Tell the caller when every stream that could open is open (or has failed).
        while opened + res.errors < args.concurrency:
            await asyncio.sleep(0.05)
        print(f"HELD {opened} {time.perf_counter() - t0:.3f}", flush=True)

    ann = asyncio.create_task(announce())
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), args.duration)
    except TimeoutError:
        res.error("hold_timeout")
    ann.cancel()
    print("DONE", flush=True)
    return {
        "ok": res.ok,
        "opened": opened,
        "errors": res.errors,
        "error_kinds": res.error_kinds,
        "elapsed_s": time.perf_counter() - t0,
    }


def main() -> None:
    """Parse arguments, run, print the JSON result on the last line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["direct", "connect", "reverse"], required=True)
    p.add_argument("--addr", required=True, help="host:port to dial (the mock or a proxy)")
    p.add_argument("--tunnel", default="api.openai.com:443", help="CONNECT target")
    p.add_argument("--sni", default="api.openai.com")
    p.add_argument("--host-header", default="api.openai.com")
    p.add_argument("--ca", default=None, help="CA bundle to verify the TLS peer")
    p.add_argument("--header", action="append", default=[], help="extra request header line")
    p.add_argument("--connect-header", action="append", default=[], help="extra CONNECT header")
    p.add_argument("--path", default="/v1/chat/completions")
    p.add_argument("--model", default="gpt-4o-mini")
    p.add_argument("--stream", action="store_true")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--requests", type=int, default=1000, help="cap on timed requests")
    p.add_argument("--duration", type=float, default=10.0, help="cap on the timed phase, s")
    p.add_argument("--timeout", type=float, default=30.0, help="per request, s")
    p.add_argument("--warmup", type=int, default=5, help="requests per connection before GO")
    p.add_argument("--wait-go", action="store_true")
    p.add_argument("--hold", action="store_true", help="memory test: hold long streams open")
    p.add_argument("--milestones", default="250,500,750")
    p.add_argument("--handshake-parallel", type=int, default=32)
    args = p.parse_args()
    host, _, port = args.addr.rpartition(":")
    args.addr_host, args.addr_port = host.strip("[]"), int(port)
    if not args.addr_host.startswith(_LOOPBACK_PREFIXES):
        sys.exit("loadgen only targets loopback addresses")
    if args.mode == "reverse":
        args.host_header = args.addr
    if args.hold:
        args.stream = True
        result = asyncio.run(run_hold(args))
    else:
        result = asyncio.run(run_load(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
