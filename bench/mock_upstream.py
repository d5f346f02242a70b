"""A fast mock of the OpenAI and Anthropic HTTP APIs over HTTPS/1.1, for benchmarks only.

It runs as its own process so that the load generator, the proxy under test and the upstream
are measured apart (CPU via /proc/<pid>/stat). It is written on bare ``asyncio.Protocol``
callbacks rather than streams or a framework: every microsecond it spends is a microsecond the
proxy under test does not get on a 2-core machine, so the mock must stay far from being the
bottleneck (the benchmark measures it alone as the "direct" scenario).

Endpoints (HTTP/1.1, keep-alive, ``Content-Length`` request bodies, no pipelining needed):

* ``POST /v1/chat/completions`` - OpenAI chat completions. Non-streaming answers are a fixed
  JSON body with ``usage``. With ``"stream": true`` the answer is chunked SSE: the first chunk
  right after the headers, then one chunk every ``--chunk-delay-ms`` up to ``--chunks`` chunks,
  then a usage chunk when ``stream_options.include_usage`` is set, then ``data: [DONE]``.
* ``POST /v1/messages`` - Anthropic messages, same shape with Anthropic's event names.
* Model ``bench-long`` (either API, streaming) is a *long* stream: one chunk every
  ``--long-interval-ms`` until ``POST /__bench/release`` is called or ``--long-cap-s`` passes.
  The benchmark uses it to hold 1,000 streams open at once and read the proxy's memory.
* ``GET /__bench/stats`` - counters (TCP connections accepted, requests, open streams) as JSON,
  so the benchmark can tell whether a proxy reuses its upstream connections.

Request bodies may override the stream shape with ``mock_chunks`` and ``mock_delay_ms``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import ssl
import sys
import time
from typing import Any

# The answers are precomputed bytes where possible: the mock's per-request cost must stay small.
_CHAT_BODY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the mock upstream."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    },
    separators=(",", ":"),
).encode()

_MESSAGES_BODY = json.dumps(
    {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-haiku-latest",
        "content": [{"type": "text", "text": "Hello from the mock upstream."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 7},
    },
    separators=(",", ":"),
).encode()


def _response_head(status: str, content_type: str, length: int | None) -> bytes:
    """Build a response head; ``length=None`` means a chunked (streamed) body."""
    framing = f"content-length: {length}" if length is not None else "transfer-encoding: chunked"
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n{framing}\r\n"
        "connection: keep-alive\r\nx-request-id: req_bench\r\n\r\n"
    ).encode()


_CHAT_RESPONSE = _response_head("200 OK", "application/json", len(_CHAT_BODY)) + _CHAT_BODY
_MESSAGES_RESPONSE = (
    _response_head("200 OK", "application/json", len(_MESSAGES_BODY)) + _MESSAGES_BODY
)
_SSE_HEAD = _response_head("200 OK", "text/event-stream; charset=utf-8", None)


def _chunk(payload: bytes) -> bytes:
    """Frame one HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _openai_delta(i: int, model: str) -> bytes:
    obj = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}],
    }
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _openai_tail(n: int, model: str, include_usage: bool) -> bytes:
    stop = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
    out = b"data: " + json.dumps(stop, separators=(",", ":")).encode() + b"\n\n"
    if include_usage:
        usage = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": n, "total_tokens": 12 + n},
        }
        out += b"data: " + json.dumps(usage, separators=(",", ":")).encode() + b"\n\n"
    return out + b"data: [DONE]\n\n"


def _anthropic_event(name: str, obj: dict[str, Any]) -> bytes:
    data = json.dumps(obj, separators=(",", ":")).encode()
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


def _anthropic_head(model: str) -> bytes:
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_bench",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": 12, "output_tokens": 1},
        },
    }
    block = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    return _anthropic_event("message_start", start) + _anthropic_event("content_block_start", block)


def _anthropic_delta(i: int) -> bytes:
    obj = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": f"tok{i} "},
    }
    return _anthropic_event("content_block_delta", obj)


def _anthropic_tail(n: int) -> bytes:
    return (
        _anthropic_event("content_block_stop", {"type": "content_block_stop", "index": 0})
        + _anthropic_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": n},
            },
        )
        + _anthropic_event("message_stop", {"type": "message_stop"})
    )


class Stats:
    """Process-wide counters, read through ``GET /__bench/stats``."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        self.open_streams = 0
        self.release = asyncio.Event()


class MockProtocol(asyncio.Protocol):
    """One client connection: parse requests, answer them one at a time (keep-alive)."""

    def __init__(self, cfg: argparse.Namespace, stats: Stats) -> None:
        self.cfg = cfg
        self.stats = stats
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        # While a stream is being written, further bytes are only buffered; answering a
        # second request before the first ends would corrupt the HTTP/1.1 framing.
        self.busy = False
        self.stream_task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.stats.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stream_task is not None:
            self.stream_task.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._process()

    def _process(self) -> None:
        while self.transport is not None and not self.busy:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            lines = head.split("\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4 : end + 4 + length])
            del self.buf[: end + 4 + length]
            method, _, rest = lines[0].partition(" ")
            path = rest.partition(" ")[0]
            self.stats.requests += 1
            self._answer(method, path, body)

    def _answer(self, method: str, path: str, body: bytes) -> None:
        assert self.transport is not None
        path = path.partition("?")[0]
        if method == "POST" and path in ("/v1/chat/completions", "/chat/completions"):
            req = _parse_json(body)
            if req.get("stream"):
                self._start_stream(req, anthropic=False)
            else:
                self.transport.write(_CHAT_RESPONSE)
        elif method == "POST" and path == "/v1/messages":
            req = _parse_json(body)
            if req.get("stream"):
                self._start_stream(req, anthropic=True)
            else:
                self.transport.write(_MESSAGES_RESPONSE)
        elif path == "/__bench/stats":
            self._json(
                {
                    "connections": self.stats.connections,
                    "requests": self.stats.requests,
                    "open_streams": self.stats.open_streams,
                }
            )
        elif method == "POST" and path == "/__bench/release":
            self.stats.release.set()
            self._json({"released": True})
        elif method == "POST" and path == "/__bench/arm":
            # A new long-stream phase: streams started from now on wait for the next release.
            self.stats.release = asyncio.Event()
            self._json({"armed": True})
        else:
            msg = b'{"error":{"message":"not found","type":"invalid_request_error"}}'
            head = _response_head("404 Not Found", "application/json", len(msg))
            self.transport.write(head + msg)

    def _json(self, obj: dict[str, Any]) -> None:
        assert self.transport is not None
        data = json.dumps(obj).encode()
        self.transport.write(_response_head("200 OK", "application/json", len(data)) + data)

    def _start_stream(self, req: dict[str, Any], *, anthropic: bool) -> None:
        self.busy = True
        self.stream_task = asyncio.get_running_loop().create_task(self._stream(req, anthropic))

    async def _stream(self, req: dict[str, Any], anthropic: bool) -> None:
        transport = self.transport
        assert transport is not None
        model = str(req.get("model", "gpt-4o-mini"))
        long = model.startswith("bench-long")
        n = int(req.get("mock_chunks", self.cfg.chunks))
        delay = float(req.get("mock_delay_ms", self.cfg.chunk_delay_ms)) / 1000.0
        opts = req.get("stream_options") or {}
        include_usage = bool(opts.get("include_usage")) if isinstance(opts, dict) else False
        self.stats.open_streams += 1
        try:
            first = _anthropic_head(model) if anthropic else b""
            first += _anthropic_delta(0) if anthropic else _openai_delta(0, model)
            transport.write(_SSE_HEAD + _chunk(first))
            sent = 1
            if long:
                deadline = time.monotonic() + self.cfg.long_cap_s
                release = self.stats.release
                interval = self.cfg.long_interval_ms / 1000.0
                while not release.is_set() and time.monotonic() < deadline:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(release.wait(), interval)
                    if self.transport is None:
                        return
                    transport.write(
                        _chunk(_anthropic_delta(sent) if anthropic else _openai_delta(sent, model))
                    )
                    sent += 1
            else:
                while sent < n:
                    await asyncio.sleep(delay)
                    if self.transport is None:
                        return
                    transport.write(
                        _chunk(_anthropic_delta(sent) if anthropic else _openai_delta(sent, model))
                    )
                    sent += 1
            tail = _anthropic_tail(sent) if anthropic else _openai_tail(sent, model, include_usage)
            transport.write(_chunk(tail) + b"0\r\n\r\n")
        finally:
            self.stats.open_streams -= 1
            self.busy = False
            self.stream_task = None
        if self.buf:
            self._process()


def _parse_json(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body) if body else {}
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


async def serve(cfg: argparse.Namespace) -> None:
    """Listen until SIGTERM/SIGINT; print ``READY <port>`` once listening."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cfg.cert, cfg.key)
    # HTTP/1.1 only: the proxies under test talk HTTP/1.1 upstream in this benchmark.
    ctx.set_alpn_protocols(["http/1.1"])
    stats = Stats()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: MockProtocol(cfg, stats), cfg.host, cfg.port, ssl=ctx, backlog=4096
    )
    port = server.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    """Parse arguments and run the mock."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert", required=True, help="PEM certificate chain (leaf first)")
    p.add_argument("--key", required=True, help="PEM private key")
    p.add_argument("--chunks", type=int, default=20)
    p.add_argument("--chunk-delay-ms", type=float, default=5.0)
    p.add_argument("--long-interval-ms", type=float, default=1000.0)
    p.add_argument("--long-cap-s", type=float, default=180.0)
    cfg = p.parse_args()
    if not cfg.host.startswith("127.") and cfg.host not in ("localhost", "::1"):
        sys.exit("the mock upstream only listens on loopback")
    asyncio.run(serve(cfg))


if __name__ == "__main__":
    main()
