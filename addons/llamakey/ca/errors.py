"""The exception every module of `llamakey.ca` raises."""

from __future__ import annotations

__all__ = ["CAError"]


class CAError(Exception):
    """CA material missing, unreadable or not fitting the configured hosts."""
