"""Where each API puts its model, read strictly: unknown and ambiguous are said, never guessed."""

from __future__ import annotations

import json

import pytest

from llamakey.rules.models import (
    ModelKind,
    ModelRead,
    check_model_pattern,
    compile_models,
    read_models,
)


def read(
    target: str,
    body: bytes = b"",
    *,
    api: bool = True,
    ctype: str = "application/json",
    method: str = "POST",
    encoding: str = "",
) -> ModelRead:
    return read_models(api, method, target, ctype, encoding, body)


def chat(model: str = "gpt-4o") -> bytes:
    return json.dumps({"model": model, "messages": []}).encode()


def test_json_body_model() -> None:
    got = read("/v1/chat/completions", chat())
    assert (got.kind, got.models) == (ModelKind.FOUND, ("gpt-4o",))
    got = read("/v1/responses", b'{"model": "o3", "input": "hi"}')
    assert got.models == ("o3",)


def test_duplicate_json_key_is_ambiguous_even_escaped_or_nested() -> None:
    for body in (
        b'{"model": "gpt-4o-mini", "model": "gpt-4o"}',
        b'{"model": "gpt-4o-mini", "mod\\u0065l": "gpt-4o"}',
        b'{"model": "a", "x": {"model": "b", "model": "c"}}',
    ):
        assert read("/v1/chat/completions", body).kind is ModelKind.AMBIGUOUS, body


def test_no_model_on_an_endpoint_that_needs_one_is_unknown() -> None:
    assert read("/v1/chat/completions", b'{"messages": []}').kind is ModelKind.UNKNOWN
    assert read("/v1/chat/completions", b"not json").kind is ModelKind.UNKNOWN
    assert read("/v1/chat/completions", chat(), encoding="gzip").kind is ModelKind.UNKNOWN
    assert read("/v1/audio/speech", b"{}", api=False).kind is ModelKind.UNKNOWN


def test_endpoints_without_a_model() -> None:
    assert read("/v1/models", method="GET", api=False).kind is ModelKind.NONE
    assert read("/v1/files", b"...", api=False, ctype="multipart/form-data; boundary=x").kind is (
        ModelKind.NONE
    )


def test_gemini_path_model_and_agreeing_body() -> None:
    path = "/v1beta/models/gemini-2.5-flash:generateContent"
    assert read(path, b'{"contents": []}').models == ("gemini-2.5-flash",)
    assert read(path, b'{"model": "models/gemini-2.5-flash"}').kind is ModelKind.FOUND
    assert read(path, b'{"model": "gemini-2.5-pro"}').kind is ModelKind.AMBIGUOUS
    assert read("/v1beta/tunedModels/mine:generateContent", api=False).models == (
        "tunedModels/mine",
    )
    batch = {"requests": [{"model": "models/gemini-embedding-001"}, {"model": "models/other"}]}
    got = read("/v1beta/models/gemini-embedding-001:batchEmbedContents", json.dumps(batch).encode())
    assert got.kind is ModelKind.AMBIGUOUS
    assert read("/v1beta/models/x:batchGenerateContent", b"{}").kind is ModelKind.BATCH


def test_azure_deployment_and_body() -> None:
    path = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
    assert read(path, b'{"messages": []}').models == ("gpt-4o",)
    assert read(path, chat("gpt-4o")).models == ("gpt-4o",)  # as the Azure SDK sends it
    assert read(path, chat("gpt-4o-mini")).kind is ModelKind.AMBIGUOUS


def test_query_model() -> None:
    assert read("/v1/realtime?model=gpt-realtime", method="GET", api=False).models == (
        "gpt-realtime",
    )
    got = read("/v1/realtime?model=a&model=b", method="GET", api=False)
    assert got.kind is ModelKind.AMBIGUOUS


def form(*fields: tuple[str, bytes], boundary: str = "xyz") -> tuple[str, bytes]:
    body = b""
    for name, value in fields:
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'.encode()
        if name == "file":
            body += b'; filename="a.wav"\r\nContent-Type: audio/wav'
        body += b"\r\n\r\n" + value + b"\r\n"
    return f"multipart/form-data; boundary={boundary}", body + f"--{boundary}--\r\n".encode()


def test_multipart_model() -> None:
    ctype, body = form(("file", b'RIFF\r\n\r\nname="model"'), ("model", b"whisper-1"))
    got = read("/v1/audio/transcriptions", body, api=False, ctype=ctype)
    assert got.models == ("whisper-1",)
    ctype, body = form(("model", b"whisper-1"), ("model", b"gpt-4o-transcribe"))
    assert read("/v1/audio/transcriptions", body, api=False, ctype=ctype).kind is (
        ModelKind.AMBIGUOUS
    )
    ctype, body = form(("file", b"x"))
    assert read("/v1/images/edits", body, api=False, ctype=ctype).kind is ModelKind.UNKNOWN
    ctype, body = form(("Model", b"dall-e-2"))
    assert read("/v1/images/edits", body, api=False, ctype=ctype).kind is ModelKind.AMBIGUOUS


def test_batches() -> None:
    assert read("/v1/batches", b'{"input_file_id": "f"}', api=False).kind is ModelKind.BATCH
    assert read("/v1/messages/batches", b"{}", api=False).kind is ModelKind.BATCH


def test_globs_are_case_sensitive_and_whole() -> None:
    rules = compile_models(("gpt-4o", "claude-*-haiku-*"))
    assert rules.allows("gpt-4o") and rules.allows("claude-3-5-haiku-latest")
    assert not rules.allows("GPT-4o") and not rules.allows("gpt-4o-mini")
    assert not rules.allows("gpt-4o\n") and not compile_models(()).allows("gpt-4o")


@pytest.mark.parametrize("pattern", ["", " gpt", "gpt\n"])
def test_bad_model_patterns(pattern: str) -> None:
    with pytest.raises(ValueError):
        check_model_pattern(pattern)
