"""Refusals in each provider's own error shape, so every SDK raises its own exception.

An OpenAI client gets ``AuthenticationError`` for our 401, an Anthropic client
``anthropic.AuthenticationError``, Cohere ``UnauthorizedError``, google-genai ``ClientError``
with ``.code == 401``, and so on: the status decides the class, the body gives the message.
"""

from __future__ import annotations

import json
import math
import uuid
from enum import StrEnum

from mitmproxy import http

from llamakey.providers import ErrorShape


class Refusal(StrEnum):
    """Why the gateway answered itself; the value is the audit log's `refused_by`."""

    BAD_REQUEST = "bad_request"
    NO_KEY = "no_master_key"
    UNKNOWN_KEY = "unknown_master_key"
    DISABLED = "user_disabled"
    EXPIRED = "key_expired"
    INVALID_JWT = "invalid_jwt"  # a bearer JWT that does not verify (README "JWT identities")
    UNKNOWN_IDENTITY = "unknown_jwt_identity"  # a valid JWT naming no user
    JWKS_UNAVAILABLE = "jwks_unavailable"  # the identity provider's keys could not be fetched
    MISDIRECTED = "misdirected"
    NOT_HTTPS = "not_https"
    BLOCKED_HOST = "blocked_host"
    NO_PROVIDER_KEY = "no_provider_key"
    AUDIT_UNAVAILABLE = "audit_unavailable"
    NOT_CLEARED = "not_cleared"  # a step of the data path did not run: fail closed
    INTERNAL_ERROR = "internal_error"  # a step raised: fail closed
    TOO_LARGE = "request_too_large"
    HEADERS_TOO_LARGE = "headers_too_large"
    # the rules (rules/, steps/authorize.py)
    PATH_NOT_CANONICAL = "path_not_canonical"
    ENDPOINT_NOT_ALLOWED = "endpoint_not_allowed"
    MODEL_NOT_ALLOWED = "model_not_allowed"
    MODEL_UNKNOWN = "model_unknown"
    AMBIGUOUS_MODEL = "ambiguous_model"
    RATE_LIMITED = "rate_limited"
    STORE_UNAVAILABLE = "rules_store_unavailable"
    BUDGET_EXCEEDED = "budget_exceeded"
    BUDGET_UNPRICED = "budget_unpriced_model"
    # routing (steps/route.py)
    NO_DEPLOYMENT = "no_deployment"
    # `lmk sidecar` (sidecar/): it could not get its credential (the JWT command failed)
    CREDENTIAL_UNAVAILABLE = "sidecar_credential_unavailable"


# status, OpenAI type, Anthropic type, Google status
_KINDS: dict[int, tuple[str, str, str]] = {
    400: ("invalid_request_error", "invalid_request_error", "INVALID_ARGUMENT"),
    401: ("invalid_request_error", "authentication_error", "UNAUTHENTICATED"),
    403: ("permission_error", "permission_error", "PERMISSION_DENIED"),
    413: ("invalid_request_error", "request_too_large", "INVALID_ARGUMENT"),
    431: ("invalid_request_error", "invalid_request_error", "INVALID_ARGUMENT"),
    421: ("invalid_request_error", "invalid_request_error", "INVALID_ARGUMENT"),
    429: ("rate_limit_error", "rate_limit_error", "RESOURCE_EXHAUSTED"),
    500: ("server_error", "api_error", "INTERNAL"),
    503: ("server_error", "api_error", "UNAVAILABLE"),
}

STATUS: dict[Refusal, int] = {
    Refusal.BAD_REQUEST: 400,
    Refusal.NO_KEY: 401,
    Refusal.UNKNOWN_KEY: 401,
    Refusal.DISABLED: 401,
    Refusal.EXPIRED: 401,
    Refusal.INVALID_JWT: 401,
    Refusal.UNKNOWN_IDENTITY: 401,
    Refusal.JWKS_UNAVAILABLE: 503,
    Refusal.MISDIRECTED: 421,
    Refusal.NOT_HTTPS: 400,
    Refusal.BLOCKED_HOST: 403,
    Refusal.NO_PROVIDER_KEY: 500,
    Refusal.AUDIT_UNAVAILABLE: 503,
    Refusal.NOT_CLEARED: 500,
    Refusal.INTERNAL_ERROR: 500,
    Refusal.TOO_LARGE: 413,
    Refusal.HEADERS_TOO_LARGE: 431,
    Refusal.PATH_NOT_CANONICAL: 400,
    Refusal.ENDPOINT_NOT_ALLOWED: 403,
    Refusal.MODEL_NOT_ALLOWED: 403,
    Refusal.MODEL_UNKNOWN: 400,
    Refusal.AMBIGUOUS_MODEL: 400,
    Refusal.RATE_LIMITED: 429,
    Refusal.BUDGET_EXCEEDED: 429,
    Refusal.BUDGET_UNPRICED: 403,
    Refusal.STORE_UNAVAILABLE: 503,
    Refusal.NO_DEPLOYMENT: 400,
    Refusal.CREDENTIAL_UNAVAILABLE: 503,
}

RETRY_WORTH_SECONDS = 60.0
"""A rate-limit refusal whose window resets within this many seconds (per-minute limits, or
a longer window about to reset) tells SDKs to retry (`x-should-retry: true`); the Stainless
SDKs wait the `Retry-After` they are given up to about a minute. A longer wait is not worth
a client blocked in a retry loop: `x-should-retry: false`."""
_TRANSIENT = frozenset(
    {
        Refusal.AUDIT_UNAVAILABLE,
        Refusal.STORE_UNAVAILABLE,
        Refusal.JWKS_UNAVAILABLE,
        Refusal.CREDENTIAL_UNAVAILABLE,
    }
)


def error_body(shape: ErrorShape, status: int, message: str, code: str) -> dict[str, object]:
    """The JSON body a provider of this shape sends for `status`."""
    openai_type, anthropic_type, google_status = _KINDS.get(status, _KINDS[500])
    match shape:
        case ErrorShape.ANTHROPIC:
            return {
                "type": "error",
                "error": {"type": anthropic_type, "message": message},
                # Not shaped like a master key (`lmk_` + 16 or more characters would be masked).
                "request_id": f"req_{uuid.uuid4().hex[:24]}",
            }
        case ErrorShape.GOOGLE:
            return {"error": {"code": status, "message": message, "status": google_status}}
        case ErrorShape.COHERE:
            return {"message": message}
        case ErrorShape.HUGGINGFACE:
            return {"error": message}
        case ErrorShape.VECTARA:
            return {"messages": [message], "request_id": uuid.uuid4().hex}
        case _:
            return {"error": {"message": message, "type": openai_type, "param": None, "code": code}}


def refusal_response(shape: ErrorShape, refusal: Refusal, message: str) -> http.Response:
    """A complete response refusing the request, marked so SDKs do not retry a hard refusal."""
    status = STATUS[refusal]
    body = json.dumps(error_body(shape, status, f"LlaMaKey: {message}", refusal.value))
    headers = {
        "content-type": "application/json",
        "x-lmk-refused": refusal.value,
        # Stainless SDKs (openai, anthropic, groq...) retry 429 and 5xx unless told not to;
        # only an unavailable audit log, counter store or sidecar credential is worth
        # retrying (and a rate limit about to reset: `set_retry_after`).
        "x-should-retry": "true" if refusal in _TRANSIENT else "false",
    }
    if refusal in _TRANSIENT:
        headers["retry-after"] = "2"
    return http.Response.make(status, body, headers)


def set_retry_after(response: http.Response, seconds: float, retry: bool | None = None) -> None:
    """Mark a rate-limit refusal with `Retry-After` (whole seconds, at least 1) and whether
    retrying is worth it (`retry`; by default `RETRY_WORTH_SECONDS`)."""
    wait = max(1, math.ceil(seconds))
    response.headers["retry-after"] = str(wait)
    worth = wait <= RETRY_WORTH_SECONDS if retry is None else retry
    response.headers["x-should-retry"] = "true" if worth else "false"


def proxy_auth_required(message: str) -> http.Response:
    """407 for a CONNECT without valid proxy credentials."""
    return http.Response.make(
        407,
        message,
        {"Proxy-Authenticate": 'Basic realm="llamakey"', "content-type": "text/plain"},
    )
