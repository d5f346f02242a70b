"""Master keys: ``lmk_`` + 32 random bytes; only their SHA-256 is stored.

A lookup is one dict access by hash (no scan over users) followed by a constant-time
comparison, so the time taken says nothing about how close a guess was.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from types import MappingProxyType

from llamakey import credentials
from llamakey.config import User


class MasterKeys:
    """The users of one configuration, found by the master key they present."""

    def __init__(self, users_by_hash: Mapping[str, User] = MappingProxyType({})) -> None:
        self._users_by_hash = users_by_hash

    def find(self, key: str) -> User | None:
        """The user holding this master key, if any (whatever their disabled/expired state)."""
        if not key.startswith(credentials.MASTER_PREFIX):
            return None
        digest = credentials.key_sha256(key)
        user = self._users_by_hash.get(digest)
        if user is None or not hmac.compare_digest(user.key_sha256 or "", digest):
            return None
        return user

    def by_hash(self, digest: str) -> User | None:
        """The user whose stored hash is `digest` (a tunnel proven earlier), if still there."""
        return self._users_by_hash.get(digest)
