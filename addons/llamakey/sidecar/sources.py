"""Where the sidecar's credential comes from: a master key in a 0600 file, or a JWT that a
command prints, cached and fetched again before it expires.

Either one is what the central proxy authenticates; the sidecar never holds a provider key.
A credential is never logged, never in an exception's text, never in a file the sidecar
writes: messages name the file or the command and what went wrong, never the value.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import jwt

from llamakey import credentials, filemodes
from llamakey.files import file_stamp
from llamakey.scrub import MASTER_KEY_PATTERN, Scrubber

log = logging.getLogger(__name__)

REFRESH_BEFORE_SECONDS = 60.0
"""A JWT is fetched again this long before its `exp` (or half-way through its life, for a
token that lives less than twice this): requests never carry a token about to expire."""
NO_EXP_SECONDS = 300.0
"""A JWT without `exp` is fetched again after this long (the central proxy decides whether it
is still good; the sidecar only reads `exp` to know when to ask for a new one)."""
RETRY_SECONDS = 5.0
"""After a failed fetch, while the cached token is still valid, the next try is this much
later: a broken command is not run again for every request."""
COMMAND_TIMEOUT_SECONDS = 30.0
CHECK_FILE_SECONDS = 1.0
"""How often, at most, the master key file is checked for a new key."""

_MASTER_KEY = re.compile(MASTER_KEY_PATTERN)
# Three base64url parts: whatever a command prints on its standard error that looks like a
# token is masked before the line is quoted in a message.
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
_MASK = Scrubber(())


class CredentialUnavailable(Exception):
    """No credential can be had now; the message says why, and never holds a secret."""


class CredentialSource(Protocol):
    """What `AddCredential` asks for the credential to put in a request."""

    def describe(self) -> str:
        """What the credential is, for the banner (a marker, never the value)."""
        ...

    async def current(self) -> str:
        """The credential to send now; raises `CredentialUnavailable`."""
        ...


class MasterKeyFile:
    """A master key from a file that only its owner may read (mode 0600), followed when the
    file changes (`lmk keys rotate`, and the new key written to it): checked at most once a
    second, off the event loop, when a request asks for the key."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._stamp = file_stamp(path)
        self.key = self._read()
        self._next_check = clock() + CHECK_FILE_SECONDS

    def _read(self) -> str:
        path = self.path
        if problem := filemodes.private_file_problem(path):
            raise CredentialUnavailable(problem)
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise CredentialUnavailable(f"{path}: cannot read: {error}") from None
        if not _MASTER_KEY.fullmatch(text):
            raise CredentialUnavailable(
                f"{path} does not hold a master key: one line, lmk_ followed by the key"
            )
        return credentials.normalise(text)

    def _shown(self) -> str:
        return credentials.marker(self.key, None).removesuffix(" (unknown)")

    def describe(self) -> str:
        return f"master key {self._shown()} from {self.path}"

    def follow(self) -> None:
        """Read the file again if it changed (blocking: in a thread). A file that no longer
        holds a key, or that others may read, is said, and the key read before stays."""
        stamp = file_stamp(self.path)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            key = self._read()
        except CredentialUnavailable as error:
            log.error("LlaMaKey sidecar: %s; still sending the master key read before", error)
            return
        if key != self.key:
            self.key = key
            log.info("LlaMaKey sidecar: %s changed: now sending %s", self.path, self._shown())

    async def current(self) -> str:
        if self._clock() >= self._next_check:
            self._next_check = self._clock() + CHECK_FILE_SECONDS
            await asyncio.to_thread(self.follow)
        return self.key


def run_command(argv: Sequence[str]) -> str:
    """What `argv` prints on its standard output; `CredentialUnavailable` when it fails."""
    name = shlex.quote(argv[0])
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",  # bytes that are no text make no token, not an exception
            timeout=COMMAND_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        raise CredentialUnavailable(
            f"the JWT command {name} did not finish within {COMMAND_TIMEOUT_SECONDS:g} s"
        ) from None
    except OSError as error:
        raise CredentialUnavailable(
            f"cannot run the JWT command {name}: {error.strerror or error}"
        ) from None
    if done.returncode != 0:
        said = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        last = _MASK.text(_JWT_SHAPE.sub("[token]", said[-1]))[:200] if said else ""
        raise CredentialUnavailable(
            f"the JWT command {name} exited with status {done.returncode}"
            + (f": {last}" if last else "")
        )
    return done.stdout


@dataclass(frozen=True, slots=True)
class Token:
    """A JWT the command printed, with when to fetch the next one."""

    value: str
    expires_at: float | None  # its `exp`; None: it has none
    refresh_at: float


class JwtCommand:
    """A JWT printed by a command, cached until shortly before its `exp`.

    The command runs off the event loop (a thread), once at a time however many requests wait
    for it. The token is decoded without verifying its signature, only to read `exp`: the
    central proxy is what verifies it. When a fetch fails while the cached token is still
    valid, that token is used (and the failure logged); when none is valid the request is
    refused (`CredentialUnavailable`).
    """

    def __init__(
        self,
        command: str,
        *,
        run: Callable[[Sequence[str]], str] = run_command,
        clock: Callable[[], float] = time.time,
    ) -> None:
        try:
            self.argv = shlex.split(command)
        except ValueError as error:
            raise CredentialUnavailable(f"the JWT command cannot be parsed: {error}") from None
        if not self.argv:
            raise CredentialUnavailable("the JWT command is empty")
        self._run = run
        self._clock = clock
        self._token: Token | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    def describe(self) -> str:
        return f"JWT printed by {shlex.quote(self.argv[0])} (fetched again before it expires)"

    def fetch(self) -> str:
        """Run the command now and cache what it prints (blocking: at start, or in a thread)."""
        self.fetches += 1
        printed = self._run(self.argv).strip()
        now = self._clock()
        token = self._read(printed, now)
        self._token = token
        return token.value

    def _read(self, printed: str, now: float) -> Token:
        name = shlex.quote(self.argv[0])
        if not printed or any(c.isspace() for c in printed):
            raise CredentialUnavailable(f"the JWT command {name} did not print one token")
        try:
            claims = jwt.decode(printed, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise CredentialUnavailable(f"the JWT command {name} printed no JWT") from None
        exp = claims.get("exp")
        if exp is None:
            return Token(printed, None, now + NO_EXP_SECONDS)
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise CredentialUnavailable(f"the JWT command {name} printed a JWT with a bad exp")
        if exp <= now:
            raise CredentialUnavailable(f"the JWT command {name} printed a JWT that has expired")
        lead = min(REFRESH_BEFORE_SECONDS, (exp - now) / 2)
        return Token(printed, float(exp), exp - lead)

    def _usable(self, now: float) -> Token | None:
        token = self._token
        if token is None or (token.expires_at is not None and now >= token.expires_at):
            return None
        return token

    async def current(self) -> str:
        token = self._token
        if token is not None and self._clock() < token.refresh_at:
            return token.value
        async with self._lock:
            token = self._token
            if token is not None and self._clock() < token.refresh_at:
                return token.value  # fetched by the request that held the lock before us
            try:
                return await asyncio.to_thread(self.fetch)
            except CredentialUnavailable as error:
                now = self._clock()
                still = self._usable(now)
                if still is None:
                    raise
                log.warning(
                    "LlaMaKey sidecar: %s; the current JWT is still valid for %.0f s",
                    error,
                    (still.expires_at - now) if still.expires_at is not None else NO_EXP_SECONDS,
                )
                self._token = Token(still.value, still.expires_at, now + RETRY_SECONDS)
                return still.value
