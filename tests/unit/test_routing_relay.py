"""The relay passes each chunk on at once, and the answer's end with its last chunk."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from llamakey.routing.relay import END_WINDOW_SECONDS, _with_end


async def upstream(*parts: bytes | float) -> AsyncIterator[bytes]:
    """Chunks as an upstream sends them; a float is a pause of that many seconds."""
    for part in parts:
        if isinstance(part, float):
            await asyncio.sleep(part)
        else:
            yield part


async def test_the_end_goes_with_the_last_chunk() -> None:
    got = [item async for item in _with_end(upstream(b"a", b"", b"b"))]
    assert got == [(b"a", False), (b"b", True)]
    assert [item async for item in _with_end(upstream())] == [(b"", True)]


async def test_a_chunk_is_not_held_for_a_slow_next_one() -> None:
    passed_on: list[tuple[bytes, float]] = []
    started = time.monotonic()
    async for chunk, _ in _with_end(upstream(b"first", 0.2, b"second")):
        passed_on.append((chunk, time.monotonic() - started))
    (first, at), (second, later) = passed_on
    assert (first, second) == (b"first", b"second")
    assert at < 0.1 < later  # held for END_WINDOW_SECONDS at most, not until the next chunk
    assert END_WINDOW_SECONDS <= 0.001
