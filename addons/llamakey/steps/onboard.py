"""Onboarding: the proxy hands out its CA and a member's environment at ``http://lmk.invalid/``.

As mitmproxy's ``mitm.it``, the address is reached through the proxy itself, in plain HTTP
(``curl -x http://gw:8080 http://lmk.invalid/ca.pem``); `.invalid` never resolves (RFC 6761),
so nothing but this proxy can answer it. This step answers every request for that host
itself and never lets one go upstream: it runs before every other step (first in
`gateway.py`), so under ``other_hosts = "block"`` and ``proxy_auth = true`` it has answered
before identify would block the host or authenticate would ask for proxy credentials.

===================  ===========================================================================
``GET /``            what is here, in plain text
``GET /ca.pem``      the CA certificate the proxy signs with (public: no key needed)
``GET /fingerprint`` its SHA-256 fingerprint, as `lmk ca fingerprint` prints it
``GET /env``         the member's export lines (`clientenv.client_environment`), given their
                     master key in ``Authorization: Bearer`` or as proxy credentials, and
                     ``?dir=`` the absolute directory of their CA files; ``?proxy=host:port``
                     the address they reach the proxy at (default: the address their
                     connection reached). A wrong, revoked, disabled or expired key: 401, and
                     nothing else.
===================  ===========================================================================

The master key is never put in the answer (`clientenv.KEY_PLACEHOLDER` stands where it goes;
the member's side fills it in): a flow's bodies are what mitmweb shows, ``-w`` saves and the
redact step masks. The key the request carries is replaced by its marker here, at
`requestheaders`, as authenticate does for provider flows. A refused ``/env`` is an audit row
(``refused_by`` ``unknown_master_key``, ``no_master_key``, ``user_disabled``, ``key_expired``,
path ``/env``, no query) and a log line; an environment handed out is a log line naming the
user and the client's address. The CA is read from the certs directory off the event loop,
once per configuration.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import PurePosixPath, PureWindowsPath
from urllib.parse import parse_qs

from mitmproxy import http

from llamakey import ca, credentials
from llamakey.clientenv import (
    KEY_PLACEHOLDER,
    ONBOARD_HOST,
    ONBOARD_URL,
    USER_HEADER,
    client_environment,
    export_lines,
    proxy_authority,
)
from llamakey.config import Settings, User
from llamakey.flowstate import mirror
from llamakey.refusals import Refusal
from llamakey.state import GatewayState
from llamakey.steps.guard import fail_closed

log = logging.getLogger(__name__)

_TEXT = "text/plain; charset=utf-8"
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

INDEX = f"""LlaMaKey onboarding, answered by the proxy itself (nothing here goes upstream).

GET {ONBOARD_URL}/ca.pem       the proxy's CA certificate
GET {ONBOARD_URL}/fingerprint  its SHA-256 fingerprint: compare it with your admin's
GET {ONBOARD_URL}/env?dir=DIR  your environment (Authorization: Bearer YOUR_MASTER_KEY), with
                                the CA files in DIR; {KEY_PLACEHOLDER} stands for your key

On your machine: LMK_MASTER_KEY=lmk_... lmk env --proxy http://PROXY:PORT --fingerprint SHA256
"""


def is_onboarding(flow: http.HTTPFlow) -> bool:
    """A plain-HTTP proxy request for the onboarding host (never one inside a tunnel: there
    the connection's target decides, and identify refuses a Host naming another)."""
    request = flow.request
    return (
        flow.server_conn.address is None
        and not flow.client_conn.tls
        and request.host.lower().rstrip(".") == ONBOARD_HOST
    )


def _answer(
    flow: http.HTTPFlow, status: int, text: str, headers: dict[str, str] | None = None
) -> None:
    flow.response = http.Response.make(
        status,
        text,
        {"content-type": _TEXT, "cache-control": "no-store", **(headers or {})},
    )


class Onboard:
    """Answers the onboarding address (see the module doc); leaves every other flow alone."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        # (the configuration it was read for, the CA's PEM, its fingerprint)
        self._ca: tuple[Settings, bytes, str] | None = None

    @fail_closed
    def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.request.host.lower().rstrip(".") != ONBOARD_HOST:
            return
        # A tunnel would go nowhere (the name resolves nowhere) or, intercepted, need a
        # certificate our name-constrained CA cannot sign: say where onboarding is instead.
        _answer(flow, 403, f"LlaMaKey: onboarding is plain HTTP only: {ONBOARD_URL}/\n")

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        # Synchronous for every other flow: no coroutine is made on the hot path.
        if flow.response or not is_onboarding(flow):
            return None
        return self._serve(flow)

    async def _serve(self, flow: http.HTTPFlow) -> None:
        key = self._take_key(flow)
        settings = self.state.settings
        path, _, query = flow.request.path.partition("?")
        if settings is None:
            _answer(flow, 503, "LlaMaKey: the proxy has no configuration yet\n")
        elif flow.request.method != "GET":
            _answer(flow, 405, "LlaMaKey: onboarding answers GET only\n", {"allow": "GET"})
        elif path in ("", "/"):
            _answer(flow, 200, INDEX)
        elif path == "/ca.pem":
            pem, _ = await self._ca_material(settings)
            flow.response = http.Response.make(
                200, pem, {"content-type": "application/x-pem-file", "cache-control": "no-store"}
            )
        elif path == "/fingerprint":
            _, fingerprint = await self._ca_material(settings)
            _answer(flow, 200, fingerprint + "\n")
        elif path == "/env":
            self._environment(flow, settings, key, parse_qs(query))
        else:
            _answer(flow, 404, f"LlaMaKey: nothing here; see {ONBOARD_URL}/\n")

    def _take_key(self, flow: http.HTTPFlow) -> str | None:
        """The master key presented (Bearer, else proxy credentials). The Bearer token is
        replaced by its marker and the proxy credentials are removed, so that no view, saved
        flow or log ever shows either."""
        headers = flow.request.headers
        found: str | None = None
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            found = credentials.normalise(token.strip())
            user = self.state.master_keys.find(found)
            headers["authorization"] = "Bearer " + (
                credentials.jwt_marker(None)  # `/env` is for master keys; no part of a JWT shows
                if credentials.is_jwt_shaped(found)
                else credentials.marker(found, user.name if user else None)
            )
        proxy_auth = credentials.proxy_credentials(headers.pop("proxy-authorization", None))
        if found is None and proxy_auth is not None:
            found = credentials.normalise(proxy_auth[1])
        return found

    async def _ca_material(self, settings: Settings) -> tuple[bytes, str]:
        """The CA's PEM and fingerprint, read (off the event loop) once per configuration."""
        cached = self._ca
        if cached is None or cached[0] is not settings:
            pem = await asyncio.to_thread(ca.ca_certificate_pem, settings.certs_dir)
            cached = self._ca = (settings, pem, ca.fingerprint(ca.load_ca_certificate(pem)))
        return cached[1], cached[2]

    def _environment(
        self,
        flow: http.HTTPFlow,
        settings: Settings,
        key: str | None,
        query: dict[str, list[str]],
    ) -> None:
        user, refusal, why = self._user(key)
        if user is None:
            self._refuse(flow, refusal, why)
            return
        state = self.state.flows(flow)
        state.user, state.groups = user.name, user.groups
        mirror(flow, state)
        directory = _one(query, "dir")
        if directory is None or not _absolute(directory):
            _answer(
                flow,
                400,
                "LlaMaKey: give dir=, the absolute path of the directory that holds (or will "
                f"hold) {ca.CA_CERT_FILE} and {ca.BUNDLE_FILE} on your machine\n",
            )
            return
        asked = _one(query, "proxy")
        proxy = _proxy_address(asked) if asked is not None else self._reached(flow, settings)
        if proxy is None:
            _answer(flow, 400, "LlaMaKey: give proxy= as host:port\n")
            return
        env = client_environment(
            user.name,
            KEY_PLACEHOLDER,
            proxy,
            proxy_auth=settings.file.proxy.proxy_auth,
            certs_dir=PurePosixPath(directory),
        )
        _answer(flow, 200, "\n".join(export_lines(env)) + "\n", {USER_HEADER: user.name})
        log.info("LlaMaKey onboarding: the environment of %s went to %s", user.name, _client(flow))

    def _user(self, key: str | None) -> tuple[User | None, Refusal, str]:
        """The user of `key` if it may be used now, else why not (the checks authenticate
        makes: known, not disabled, not expired)."""
        if key is None:
            return None, Refusal.NO_KEY, "give your master key as Authorization: Bearer"
        user = self.state.master_keys.find(key)
        if user is None:
            return None, Refusal.UNKNOWN_KEY, "wrong, revoked or mistyped master key"
        if why := user.refusal(datetime.now(UTC)):
            refusal = Refusal.DISABLED if why == "disabled" else Refusal.EXPIRED
            return None, refusal, f"the master key of {user.name!r} is {why}"
        return user, Refusal.NO_KEY, ""

    def _refuse(self, flow: http.HTTPFlow, refusal: Refusal, why: str) -> None:
        """401 and nothing else; the write-ahead step records the refusal's audit row."""
        state = self.state.flows(flow)
        state.refusal = refusal
        mirror(flow, state)
        _answer(
            flow,
            401,
            f"LlaMaKey: {why}\n",
            {"www-authenticate": 'Bearer realm="LlaMaKey onboarding"'},
        )
        log.warning("LlaMaKey onboarding: refused /env from %s (%s)", _client(flow), refusal.value)

    @staticmethod
    def _reached(flow: http.HTTPFlow, settings: Settings) -> str:
        """The proxy's address as this client's connection reached it (the socket's local
        address), else the configured listen address."""
        sockname = flow.client_conn.sockname
        host = str(sockname[0]) if sockname else ""
        try:
            address = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            address = None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            host = str(address.ipv4_mapped)
        if address is None or address.is_unspecified:
            listen = settings.file.proxy.listen_host
            host = "127.0.0.1" if listen in ("", "0.0.0.0", "::") else listen
            return proxy_authority(host, settings.file.proxy.listen_port)
        return proxy_authority(host, int(sockname[1]))


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _absolute(directory: str) -> bool:
    """An absolute path (POSIX, or Windows for members there) with no control characters."""
    if _CONTROL.search(directory) or len(directory) > 4096:
        return False
    return PurePosixPath(directory).is_absolute() or PureWindowsPath(directory).is_absolute()


def _proxy_address(value: str) -> str | None:
    """``host:port`` as given (an IPv6 host in brackets), or None if it is not one."""
    host, sep, port = value.rpartition(":")
    if not sep or not _HOST.fullmatch(host) or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return f"{host}:{int(port)}"


def _client(flow: http.HTTPFlow) -> str:
    peer = flow.client_conn.peername
    return str(peer[0]) if peer else "an unknown address"
