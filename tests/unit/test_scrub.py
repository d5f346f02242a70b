"""Masking secrets in bodies that pass through in chunks: a key split anywhere never leaks."""

from __future__ import annotations

import pytest

from llamakey import credentials
from llamakey.scrub import Scrubber
from tests.unit.builders import REAL

MASTER = credentials.new_master_key()
REAL_KEY = REAL["openai"]
BODY = (
    b'data: {"error": {"message": "Incorrect API key provided: '
    + REAL_KEY.encode()
    + b'", "yours": "hf_'
    + MASTER.encode()
    + b'", "again": "'
    + MASTER.encode()
    + b'"}}\n\n'
)


def streamed(scrubber: Scrubber, chunks: list[bytes]) -> bytes:
    stream = scrubber.stream()
    return b"".join(stream.feed(c) for c in chunks) + stream.finish()


@pytest.mark.parametrize("cut", range(1, len(BODY)))
def test_a_key_split_at_any_byte_is_masked(cut: int) -> None:
    scrubber = Scrubber([REAL_KEY, REAL["anthropic"]])
    out = streamed(scrubber, [BODY[:cut], BODY[cut:]])
    assert out == scrubber.same_length(BODY)  # the same bytes as masking the whole body
    assert REAL_KEY.encode() not in out and MASTER[4:].encode() not in out


def test_a_key_in_single_byte_chunks_is_masked() -> None:
    scrubber = Scrubber([REAL_KEY])
    out = streamed(scrubber, [BODY[i : i + 1] for i in range(len(BODY))])
    assert out == scrubber.same_length(BODY)


def test_an_event_ending_in_a_newline_is_not_held_back() -> None:
    stream = Scrubber([REAL_KEY]).stream()
    event = b'data: {"choices": [{"delta": {"content": "hello"}}]}\n\n'
    assert stream.feed(event) == event  # forwarded whole, at once
    assert stream.finish() == b""


def test_only_a_tail_that_could_start_a_secret_is_held() -> None:
    stream = Scrubber([REAL_KEY]).stream()
    assert stream.feed(b"tokens so far: lm") == b"tokens so far: "
    assert stream.feed(b"ao\n") == b"lmao\n"  # not a key after all: released as it was
    assert stream.feed(b'"' + REAL_KEY[:10].encode()) == b'"'
    assert stream.feed(REAL_KEY[10:].encode() + b'"') == b"*" * len(REAL_KEY) + b'"'


def test_a_long_run_of_key_characters_is_not_held_for_ever() -> None:
    stream = Scrubber([]).stream()
    data = b"lmk_" + b"A" * 10_000  # no master key is this long: most of it goes out
    out = stream.feed(data)
    assert len(out) >= len(data) - 256
    assert out + stream.finish() == Scrubber([]).same_length(data)
