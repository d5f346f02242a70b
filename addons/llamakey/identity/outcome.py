"""What a presented credential proved: a user, or why not (the same for every identity source)."""

from __future__ import annotations

from dataclasses import dataclass

from llamakey.config import User
from llamakey.refusals import Refusal
from llamakey.rules.policy import UserPolicy


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a token proved: a user (with their policy when their groups came from the token),
    or a refusal and the message the client sees."""

    user: User | None = None
    policy: UserPolicy | None = None
    refusal: Refusal | None = None
    message: str = ""


def refused(refusal: Refusal, message: str) -> Outcome:
    return Outcome(refusal=refusal, message=message)
