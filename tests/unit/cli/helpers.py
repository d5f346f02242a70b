"""Helpers of the `lmk` tests: run it in-process, read what it prints."""

from __future__ import annotations

import hashlib
import re
import shlex
from pathlib import Path

import pytest

from llamakey.cli import main

CLIENT_VARS = (
    "HTTPS_PROXY",
    "https_proxy",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "AWS_CA_BUNDLE",
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
    "NODE_EXTRA_CA_CERTS",
    "NODE_USE_ENV_PROXY",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "CO_API_KEY",
    "HF_TOKEN",
    "GOOGLE_API_KEY",
    "MISTRAL_API_KEY",
    "GROQ_API_KEY",
)
SDK_KEY_VARS = tuple(v for v in CLIENT_VARS if v.endswith(("_API_KEY", "_TOKEN")))


def lmk(path: Path, *args: str) -> int:
    return int(main(["--config", str(path), *args]))


def lmk_fails(path: Path, *args: str) -> str:
    """Run a command that must fail; return its error message."""
    with pytest.raises(SystemExit) as caught:
        lmk(path, *args)
    assert caught.value.code not in (0, None)
    return str(caught.value.code)


def new_key(path: Path, capsys: pytest.CaptureFixture[str], name: str, *groups: str) -> str:
    group_args = [a for g in groups for a in ("--group", g)]
    assert lmk(path, "keys", "new", name, *group_args) == 0
    key = capsys.readouterr().out.strip()
    assert re.fullmatch(r"lmk_[A-Za-z0-9_-]{43}", key), key
    return key


def exports(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in text.splitlines():
        assert line.startswith("export "), line
        name, _, value = line.removeprefix("export ").partition("=")
        (env[name],) = shlex.split(value)
    return env


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
