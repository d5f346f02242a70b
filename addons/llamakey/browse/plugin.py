"""The Datasette plugin ``lmk audit browse`` loads (through ``--plugins-dir``): it puts the
access-token gate (:mod:`llamakey.browse.gate`) in front of every page.

Imported only inside Datasette's process, which ``lmk audit browse`` starts with the token and
the cookie's name in its environment. Without a token it refuses to start rather than serve the
audit log ungated.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from datasette import hookimpl

from llamakey.browse.gate import COOKIE_ENV, TOKEN_ENV, ASGIApp, gate

__all__ = ["asgi_wrapper"]


def asgi_wrapper(datasette: object) -> Callable[[ASGIApp], ASGIApp]:
    """Datasette's ``asgi_wrapper`` hook: wrap the whole application in the gate."""
    token = os.environ.get(TOKEN_ENV, "")
    cookie = os.environ.get(COOKIE_ENV, "")
    if not token or not cookie:
        raise RuntimeError(f"{TOKEN_ENV} and {COOKIE_ENV} must be set: lmk audit browse sets them")

    def wrap(app: ASGIApp) -> ASGIApp:
        return gate(app, token=token, cookie=cookie)

    return wrap


hookimpl(asgi_wrapper)  # marks the function as Datasette's hook implementation, in place
