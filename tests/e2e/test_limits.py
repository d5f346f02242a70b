"""Limits: a request body over `limits.max_request_mb` is refused (413) before anything goes
upstream, whether its size is declared or it arrives chunked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_gateway
from tests.e2e.test_audit import client, rows
from tests.harness import Gateway, wait_until
from tests.mock_upstream import MockUpstream


@pytest.fixture(scope="module")
def small_gateway(
    tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream
) -> Iterator[Gateway]:
    gw = make_gateway(
        tmp_path_factory.mktemp("limits"), mock, extra_toml="\n[limits]\nmax_request_mb = 1\n"
    )
    gw.start()
    yield gw
    gw.stop()


def big_body() -> bytes:
    return json.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * (2 << 20)}]}
    ).encode()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_request_over_the_limit_is_refused_before_it_goes_upstream(
    small_gateway: Gateway, mock: MockUpstream, chunked: bool
) -> None:
    mock.clear()
    body = big_body()
    with client(small_gateway) as http:
        response = http.post(
            "https://api.openai.com/v1/chat/completions",
            content=iter([body[: len(body) // 2], body[len(body) // 2 :]]) if chunked else body,
            headers={
                "authorization": f"Bearer {small_gateway.keys['alice']}",
                "content-type": "application/json",
            },
        )
    assert response.status_code == 413
    assert "limits.max_request_mb" in response.json()["error"]["message"]
    assert mock.seen == []
    db: Path = small_gateway.audit_db
    wait_until(lambda: rows(db, "refused_by = 'request_too_large'"), "the refusal's audit row")


def test_a_request_within_the_limit_goes_through(
    small_gateway: Gateway, mock: MockUpstream
) -> None:
    with client(small_gateway) as http:
        response = http.post(
            "https://api.openai.com/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {small_gateway.keys['alice']}"},
        )
    assert response.status_code == 200


def test_a_huge_header_is_answered_431_not_forwarded(
    small_gateway: Gateway, mock: MockUpstream
) -> None:
    from tests.e2e.test_attacks import send

    mock.clear()
    answer = send(
        small_gateway,
        "api.openai.com",
        "GET",
        "/v1/models",
        [("authorization", f"Bearer {small_gateway.keys['alice']}"), ("x-big", "a" * (1 << 20))],
    )
    assert answer.status == 431
    assert mock.seen == []
