"""Refusals in each provider's own error shape."""

from __future__ import annotations

import json

import pytest

from llamakey.providers import ErrorShape
from llamakey.refusals import Refusal, error_body, proxy_auth_required, refusal_response
from tests.unit.builders import (
    assert_shape,
)

# errors


@pytest.mark.parametrize("shape", list(ErrorShape))
def test_refusal_response_in_each_provider_shape(shape: ErrorShape) -> None:
    resp = refusal_response(shape, Refusal.UNKNOWN_KEY, "the key is wrong")
    assert resp.status_code == 401
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["x-should-retry"] == "false"
    assert resp.headers["x-lmk-refused"] == "unknown_master_key"
    data = json.loads(resp.content or b"")
    assert assert_shape(shape, data, 401) == "LlaMaKey: the key is wrong"


def test_refusal_body_details() -> None:
    openai = error_body(ErrorShape.OPENAI, 401, "m", "unknown_master_key")
    assert openai["error"] == {
        "message": "m",
        "type": "invalid_request_error",
        "param": None,
        "code": "unknown_master_key",
    }
    anthropic = error_body(ErrorShape.ANTHROPIC, 401, "m", "c")
    assert anthropic["error"] == {"type": "authentication_error", "message": "m"}
    assert error_body(ErrorShape.GOOGLE, 401, "m", "c") == {
        "error": {"code": 401, "message": "m", "status": "UNAUTHENTICATED"}
    }
    assert error_body(ErrorShape.COHERE, 401, "m", "c") == {"message": "m"}
    assert error_body(ErrorShape.HUGGINGFACE, 401, "m", "c") == {"error": "m"}
    assert error_body(ErrorShape.VECTARA, 401, "m", "c")["messages"] == ["m"]


@pytest.mark.parametrize(
    ("refusal", "status", "retry"),
    [
        (Refusal.NO_KEY, 401, "false"),
        (Refusal.DISABLED, 401, "false"),
        (Refusal.MISDIRECTED, 421, "false"),
        (Refusal.NOT_HTTPS, 400, "false"),
        (Refusal.BLOCKED_HOST, 403, "false"),
        (Refusal.NO_PROVIDER_KEY, 500, "false"),  # SDKs retry 5xx unless told not to
        (Refusal.AUDIT_UNAVAILABLE, 503, "true"),
    ],
)
def test_refusal_status_and_retry_hint(refusal: Refusal, status: int, retry: str) -> None:
    resp = refusal_response(ErrorShape.ANTHROPIC, refusal, "x")
    assert resp.status_code == status
    assert resp.headers["x-should-retry"] == retry
    assert ("retry-after" in resp.headers) is (retry == "true")


def test_proxy_auth_required_is_407_with_challenge() -> None:
    resp = proxy_auth_required("need a key")
    assert resp.status_code == 407
    assert resp.headers["Proxy-Authenticate"].startswith("Basic ")
