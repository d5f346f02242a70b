"""Feeding a stream to a `StreamMeter` cut up in every way, and naming providers and flavors."""

from __future__ import annotations

import random
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import pytest

from llamakey.providers import BUILTIN_PROVIDERS, Provider
from llamakey.usage import ApiFlavor, StreamMeter, Usage
from tests.unit.usage.payloads import STREAM_CASES


def provider(name: str) -> Provider:
    """The built-in catalogue entry of `name`."""
    return BUILTIN_PROVIDERS[name]


def feed_all(meter: StreamMeter, chunks: list[bytes]) -> bytes:
    """Feed chunks in order and return everything the meter forwarded, finish() included."""
    out = [meter.feed(c) for c in chunks]
    out.append(meter.finish())
    return b"".join(out)


def two_way_splits(data: bytes) -> Iterator[list[bytes]]:
    """The stream cut in two at every byte offset."""
    for i in range(len(data) + 1):
        yield [data[:i], data[i:]]


def one_byte_chunks(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def random_splits(data: bytes, seed: int, count: int = 30) -> Iterator[list[bytes]]:
    """Streams cut at several random places (reproducible)."""
    rng = random.Random(seed)
    for _ in range(count):
        cuts = sorted(rng.sample(range(1, len(data)), k=min(6, len(data) - 1)))
        bounds = [0, *cuts, len(data)]
        yield [data[a:b] for a, b in pairwise(bounds)]


def all_splittings(data: bytes, seed: int = 7) -> Iterator[list[bytes]]:
    yield [data]
    yield one_byte_chunks(data)
    yield from two_way_splits(data)
    yield from random_splits(data, seed)


def assert_stream_usage(name: str, flavor: str, data: bytes, expected: Usage) -> None:
    """Every way of cutting the stream gives the same usage, and the bytes pass unchanged."""
    for chunks in all_splittings(data):
        meter = StreamMeter(provider(name), ApiFlavor(flavor))
        assert feed_all(meter, chunks) == data
        assert meter.usage == expected, f"split {[len(c) for c in chunks]}"


def stream_cases(*flavors: ApiFlavor) -> list[Any]:
    """`STREAM_CASES` of these flavors as (provider, flavor, data, expected) params."""
    return [
        pytest.param(name, flavor, data, expected, id=case_id)
        for case_id, name, flavor, data, expected in STREAM_CASES
        if flavor in flavors
    ]
