"""JWT identities: a bearer JWT from the team's identity provider, in place of a master key.

PyJWT verifies every token (signature, ``iss``, ``aud``, ``exp``, ``nbf``, ``iat``, with a small
leeway) against an explicit list of asymmetric algorithms (`config.schema.JwtTable`: never
``none``, never HMAC), with keys from a static PEM or a JWKS URL. The claim named by
`identity_claim` is matched against `users.NAME.jwt_subject`; an identity no user names is
refused, or given the `unknown_identity` group.

The key set of a JWKS URL is cached (`jwks_cache_seconds`) and fetched on a thread, never on the
event loop: `JwtIdentities.check` answers from the cache (CPU only) or says the keys must be
fetched first, and `JwtIdentities.check_after_fetch` awaits that fetch. A token whose ``kid``
is not in the set causes at most one fetch per `jwks_refresh_seconds`, shared by every request
waiting on it, so random ``kid`` values cannot make us hammer the identity provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import logging
import re
import ssl
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import certifi
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from llamakey.config import ConfigFile, JwtTable, Settings, User, policy_of
from llamakey.config.load import JwtPublicKey as PublicKey
from llamakey.identity.outcome import Outcome, refused
from llamakey.refusals import Refusal
from llamakey.rules.policy import UserPolicy

log = logging.getLogger(__name__)

# A claim value that names an identity no user names becomes the audit row's user as
# ``jwt:VALUE``: the colon keeps it apart from every user name, and the characters keep it
# one token in counter keys, log lines and report rows.
_SYNTHETIC_VALUE = re.compile(r"[A-Za-z0-9._@+-]{1,128}")
_MAX_JWKS_BYTES = 1024 * 1024
_MAX_GROUPS = 256
_POLICY_CACHE = 4096
_VERIFIED_CACHE = 16384


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


_FAMILY: dict[str, type[Any]] = {
    "RS": rsa.RSAPublicKey,
    "PS": rsa.RSAPublicKey,
    "ES": ec.EllipticCurvePublicKey,
    "Ed": ed25519.Ed25519PublicKey,
}


class JwksUnavailable(Exception):
    """The key set could not be fetched or read (the message names why, never a token)."""


_UNAVAILABLE = refused(
    Refusal.JWKS_UNAVAILABLE, "the identity provider's signing keys could not be fetched; try again"
)


def _fits(key: object, algorithm: str) -> bool:
    """The key is of the family the algorithm signs with (an RSA key for RS*/PS*, …)."""
    family = _FAMILY.get(algorithm[:2])
    return family is not None and isinstance(key, family)


class StaticKey:
    """One PEM public key (`jwt.public_key_file`): every token is verified against it,
    whatever its ``kid``."""

    has_keys = True
    generation = 0  # never changes: a verdict stands until the token expires

    def __init__(self, key: PublicKey) -> None:
        self.key = key

    def lookup(self, kid: str | None) -> PublicKey | None:
        return self.key

    def key_algorithm(self, kid: str | None) -> str | None:
        return None

    def must_fetch(self, kid: str | None) -> bool:
        return False

    def refresh_if_stale(self) -> None:
        return None

    async def fetch(self) -> None:
        return None


class RemoteKeySet:
    """The key set at a JWKS URL: fetched on a thread, cached, refetched when stale (in the
    background) or for an unknown ``kid`` (at most once per `refresh_seconds`)."""

    def __init__(
        self,
        url: str,
        ca: Path | None,
        cache_seconds: float,
        refresh_seconds: float,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url, self.ca = url, ca
        self.cache_seconds, self.refresh_seconds, self.timeout = (
            cache_seconds,
            refresh_seconds,
            timeout,
        )
        self._clock = clock
        self._keys: dict[str | None, PublicKey] = {}
        self._algorithms: dict[str | None, str] = {}  # a key's own `alg`, where it names one
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._pending: asyncio.Future[None] | None = None
        self._open: urllib.request.OpenerDirector | None = None
        self.fetches = 0  # how many times the URL was fetched (tests, logs)
        self.generation = 0  # one more for each key set fetched: older verdicts are void

    def same_source(self, table: JwtTable, ca: Path | None) -> bool:
        return self.url == table.jwks_url and self.ca == ca

    @property
    def has_keys(self) -> bool:
        return self._fetched_at is not None

    def lookup(self, kid: str | None) -> PublicKey | None:
        if kid is None and len(self._keys) == 1:  # a set of one key needs no kid
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    def key_algorithm(self, kid: str | None) -> str | None:
        return self._algorithms.get(kid)

    def must_fetch(self, kid: str | None) -> bool:
        """The token cannot be checked before a fetch: no keys yet, or its kid is unknown
        and the last attempt is long enough ago. A stale set is refetched in the background."""
        now = self._clock()
        if self._pending is not None:
            return self._fetched_at is None or self.lookup(kid) is None
        may_try = self._attempted_at is None or now - self._attempted_at >= self.refresh_seconds
        if self._fetched_at is None:
            return may_try
        if self.lookup(kid) is None:
            return may_try
        self.refresh_if_stale()
        return False

    def refresh_if_stale(self) -> None:
        """Start fetching the set in the background when it is older than `cache_seconds`
        (the stale set serves meanwhile)."""
        now = self._clock()
        if (
            self._pending is None
            and self._fetched_at is not None
            and now - self._fetched_at >= self.cache_seconds
            and (self._attempted_at is None or now - self._attempted_at >= self.refresh_seconds)
        ):
            with contextlib.suppress(RuntimeError):  # no event loop (a direct call)
                self._start()

    def _start(self) -> asyncio.Future[None]:
        if self._pending is None:
            self._attempted_at = self._clock()
            self._pending = asyncio.get_running_loop().create_task(self._refresh())
        return self._pending

    async def fetch(self) -> None:
        """Fetch the set (or join the fetch under way); JwksUnavailable if there is none."""
        await asyncio.shield(self._start())

    async def _refresh(self) -> None:
        try:
            keys, algorithms = await asyncio.to_thread(self._download)
        except JwksUnavailable as error:
            if self._fetched_at is None:
                raise
            log.warning("LlaMaKey: jwt.jwks_url: %s; keeping the keys fetched before", error)
            return
        finally:
            self._pending = None
        self._keys, self._algorithms = keys, algorithms
        self._fetched_at = self._clock()
        self.generation += 1

    def _opener(self) -> urllib.request.OpenerDirector:
        """Direct connections (no proxy from the environment: a client's HTTPS_PROXY sourced
        in the proxy's shell would point the fetch at the proxy itself), verified against
        certifi's roots plus `jwks_ca`."""
        if self._open is None:
            context = ssl.create_default_context(cafile=certifi.where())
            if self.ca is not None:
                context.load_verify_locations(cafile=str(self.ca))
            self._open = urllib.request.build_opener(
                urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
            )
        return self._open

    def _download(self) -> tuple[dict[str | None, PublicKey], dict[str | None, str]]:
        """One GET of the URL (on a worker thread) and its keys."""
        self.fetches += 1
        request = urllib.request.Request(self.url, headers={"accept": "application/json"})
        try:
            with self._opener().open(request, timeout=self.timeout) as answer:
                body = answer.read(_MAX_JWKS_BYTES + 1)
        except (OSError, ValueError, http.client.HTTPException) as error:
            raise JwksUnavailable(f"cannot fetch {self.url}: {error}") from None
        if len(body) > _MAX_JWKS_BYTES:
            raise JwksUnavailable(f"{self.url}: the key set is larger than 1 MiB")
        try:
            data = json.loads(body)
            members = data["keys"] if isinstance(data, dict) else None
            if not isinstance(members, list):
                raise ValueError("no 'keys' list")
        except (ValueError, KeyError) as error:
            raise JwksUnavailable(f"{self.url}: not a JWK set ({error})") from None
        keys: dict[str | None, PublicKey] = {}
        algorithms: dict[str | None, str] = {}
        for member in members:
            if not isinstance(member, dict) or member.get("use", "sig") != "sig":
                continue
            if member.get("kty") not in ("RSA", "EC", "OKP"):  # never a symmetric ("oct") key
                continue
            try:
                key = jwt.PyJWK(member).key
            except jwt.PyJWTError:
                continue
            if not isinstance(
                key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
            ):
                continue  # a private key published by mistake is not used
            kid = member.get("kid") if isinstance(member.get("kid"), str) else None
            keys[kid] = key
            if isinstance(member.get("alg"), str):
                algorithms[kid] = member["alg"]
        if not keys:
            raise JwksUnavailable(f"{self.url}: no usable signing key in the set")
        return keys, algorithms


KeySource = StaticKey | RemoteKeySet


class JwtIdentities:
    """The `[jwt]` table of one configuration: turns a bearer JWT into a user."""

    def __init__(self, settings: Settings, keys: KeySource) -> None:
        table = settings.file.jwt
        assert table is not None
        self.table = table
        self.keys = keys
        self._file: ConfigFile = settings.file
        self._users: Mapping[str, User] = settings.users_by_subject
        self._own_tables = {**settings.file.users, **settings.users_file.users}
        self._policies: dict[tuple[str, tuple[str, ...]], UserPolicy] = {}
        self._verified: dict[bytes, tuple[float, int, Outcome]] = {}

    @classmethod
    def of(cls, settings: Settings, before: JwtIdentities | None) -> JwtIdentities | None:
        """The identities of `settings` (None without `[jwt]`); a JWKS cache is kept across a
        reload that leaves its URL as it was."""
        table = settings.file.jwt
        if table is None:
            return None
        keys: KeySource
        if table.jwks_url is None:
            assert settings.jwt_public_key is not None
            keys = StaticKey(settings.jwt_public_key)
        elif (
            before is not None
            and isinstance(before.keys, RemoteKeySet)
            and before.keys.same_source(table, settings.jwks_ca)
        ):
            keys = before.keys
            keys.cache_seconds = table.jwks_cache_seconds
            keys.refresh_seconds = table.jwks_refresh_seconds
            keys.timeout = table.jwks_timeout_seconds
        else:
            keys = RemoteKeySet(
                table.jwks_url,
                settings.jwks_ca,
                table.jwks_cache_seconds,
                table.jwks_refresh_seconds,
                table.jwks_timeout_seconds,
            )
        return cls(settings, keys)

    def check(self, token: str) -> Outcome | None:
        """The outcome of `token` from the keys at hand; None when they must be fetched first
        (then `check_after_fetch`)."""
        remembered = self._verified.get(_digest(token))
        if remembered is not None:
            until, generation, outcome = remembered
            if time.time() < until and generation == self.keys.generation:
                self.keys.refresh_if_stale()
                return outcome
        header = self._header(token)
        if isinstance(header, Outcome):
            return header
        kid, _ = header
        if self.keys.must_fetch(kid):
            return None
        if not self.keys.has_keys:  # the last fetch failed, and the next is not due yet
            return _UNAVAILABLE
        return self._verify(token, header)

    async def check_after_fetch(self, token: str) -> Outcome:
        """`check`, after fetching the key set (or joining the fetch under way)."""
        try:
            await self.keys.fetch()
        except JwksUnavailable as error:
            log.warning("LlaMaKey: jwt.jwks_url: %s", error)
            return _UNAVAILABLE
        header = self._header(token)
        return header if isinstance(header, Outcome) else self._verify(token, header)

    def _header(self, token: str) -> tuple[str | None, str] | Outcome:
        """(kid, alg) of the token's header, or the refusal of a token that cannot be one."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return refused(Refusal.INVALID_JWT, "the bearer token is not a readable JWT")
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self.table.algorithms:
            allowed = ", ".join(self.table.algorithms)
            return refused(
                Refusal.INVALID_JWT,
                f"the JWT is signed with {str(alg)[:16]!r}; this proxy accepts only {allowed}",
            )
        return (kid if isinstance(kid, str) else None), alg

    def _verify(self, token: str, header: tuple[str | None, str]) -> Outcome:
        kid, alg = header
        key = self.keys.lookup(kid)
        if key is None:
            return refused(
                Refusal.INVALID_JWT,
                "the JWT's signing key (kid) is not among the identity provider's keys",
            )
        own_alg = self.keys.key_algorithm(kid) if isinstance(self.keys, RemoteKeySet) else None
        if not _fits(key, alg) or (own_alg is not None and own_alg != alg):
            return refused(Refusal.INVALID_JWT, f"the JWT's algorithm {alg} is not its key's")
        table = self.table
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=table.audience,
                issuer=table.issuer,
                leeway=table.leeway_seconds,
                options={"require": ["exp", "iss", "aud", table.identity_claim]},
            )
        except jwt.ExpiredSignatureError:
            return refused(Refusal.INVALID_JWT, "the JWT has expired")
        except jwt.ImmatureSignatureError:
            return refused(Refusal.INVALID_JWT, "the JWT is not valid yet (nbf or iat)")
        except jwt.InvalidIssuerError:
            return refused(Refusal.INVALID_JWT, "the JWT's issuer (iss) is not this proxy's")
        except jwt.InvalidAudienceError:
            return refused(Refusal.INVALID_JWT, "the JWT's audience (aud) is not this proxy's")
        except jwt.MissingRequiredClaimError as error:
            return refused(Refusal.INVALID_JWT, f"the JWT has no {error.claim!r} claim")
        except jwt.InvalidSignatureError:
            return refused(Refusal.INVALID_JWT, "the JWT's signature does not verify")
        except jwt.PyJWTError:  # a claim of the wrong type, a header PyJWT cannot read, …
            return refused(Refusal.INVALID_JWT, "the JWT is malformed")
        outcome = self._identity(claims)
        if outcome.user is not None:
            self._remember(token, claims, outcome)
        return outcome

    def _remember(self, token: str, claims: Mapping[str, Any], outcome: Outcome) -> None:
        """Keep the verdict on a token that passed (by its SHA-256, never the token) until it
        expires or the key set changes: a client sends the same token for an hour, and
        verifying it again each time costs a few hundred microseconds of the event loop."""
        if len(self._verified) >= _VERIFIED_CACHE:
            self._verified.clear()
        until = float(claims["exp"]) + self.table.leeway_seconds
        self._verified[_digest(token)] = (until, self.keys.generation, outcome)

    def _identity(self, claims: Mapping[str, Any]) -> Outcome:
        """The user the verified claims name, with the groups the token adds."""
        value = claims.get(self.table.identity_claim)
        if not isinstance(value, str) or not value:
            return refused(
                Refusal.INVALID_JWT, f"the JWT's {self.table.identity_claim!r} is not a string"
            )
        extra = self._claimed_groups(claims)
        user = self._users.get(value)
        if user is None:
            default = self.table.unknown_identity
            if default == "refuse" or not _SYNTHETIC_VALUE.fullmatch(value):
                return refused(
                    Refusal.UNKNOWN_IDENTITY,
                    f"the JWT is valid, but its {self.table.identity_claim} names no user of "
                    "this proxy (users.NAME.jwt_subject)",
                )
            user = User(
                name=f"jwt:{value}",
                key_sha256=None,
                groups=(default,),
                disabled=False,
                expires=None,
                jwt_subject=value,
            )
        elif not extra or set(extra) <= set(user.groups):
            return Outcome(user=user)  # the policy compiled at load applies
        user = replace(user, groups=tuple(dict.fromkeys((*user.groups, *extra))))
        return Outcome(user=user, policy=self._policy(user))

    def _claimed_groups(self, claims: Mapping[str, Any]) -> tuple[str, ...]:
        """The groups the token names that are defined in [groups] (others are ignored)."""
        if self.table.groups_claim is None:
            return ()
        named = claims.get(self.table.groups_claim)
        if isinstance(named, str):
            named = [named]
        if not isinstance(named, list):
            return ()
        return tuple(
            g for g in named[:_MAX_GROUPS] if isinstance(g, str) and g in self._file.groups
        )

    def _policy(self, user: User) -> UserPolicy:
        key = (user.name, user.groups)
        found = self._policies.get(key)
        if found is None:
            if len(self._policies) >= _POLICY_CACHE:
                self._policies.clear()
            own = self._own_tables.get(user.name)  # None for a `jwt:` identity
            found = self._policies[key] = policy_of(self._file, user.name, user.groups, own)
        return found
