# mypy: disallow-untyped-calls=False
# (mitmproxy's web app, options and addon manager are not annotated)
"""What `lmk web` lets the holder of mitmweb's token do: watch, never steer.

mitmweb's API can change any option, run any command and edit, replay or load flows. In a
process that holds every real provider key, that is the keys: `map_remote` sends requests (real
key included) to a host of one's choosing, `scripts` runs code that reads the environment,
`ssl_insecure` or `mode=upstream:` lets a listener read the traffic. So:

* `OptionGuard` (a `configure` hook, mitmproxy's way to refuse an option change) lets only the
  options in `UI_OPTIONS` change once the proxy runs, and `START_OPTIONS` at start (`--set`,
  `-w`); any other change is refused with `OptionsError`, whoever makes it (`PUT /options`, the
  `set` command, ...). The gateway's own ConfigLoader still applies the configuration file.
  An allow-list: an option mitmproxy adds tomorrow is refused until someone decides otherwise.
* `guard_api` answers the API calls that would resend, rewrite or import flows, or run
  commands other than `SAFE_COMMANDS`, with 403 and one line saying why: editing a request or
  response (a live flow's request is still to be sent, and holds the real key while upstream),
  replaying one, uploading a flow file (it would run through the key swap and the audit log).
  What sends nothing stays: viewing, marking and commenting, duplicate, revert, kill, delete,
  clear, and "copy as curl" (whose answer is scrubbed like everything mitmweb sends).
* `log_request` and `hide_in_logs` keep the token out of every log line (tornado logs each
  request's URL, `?token=...` included).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any

from mitmproxy import ctx, exceptions
from mitmproxy.tools.web import app

#: Options the mitmweb UI may change while the proxy runs: how flows are shown, nothing else.
UI_OPTIONS: frozenset[str] = frozenset(
    {
        "web_columns",
        "web_theme",
        "content_view_lines_cutoff",
        "view_filter",
        "view_order",
        "view_order_reversed",
    }
)

#: Options `lmk web --set` (and `-w`) may also set at start, by whoever starts the proxy.
START_OPTIONS: frozenset[str] = UI_OPTIONS | {"save_stream_file", "termlog_verbosity"}

#: mitmweb commands the API runs: "copy as curl/httpie/raw" (the answer is scrubbed).
SAFE_COMMANDS: frozenset[str] = frozenset({"export", "export.formats"})

#: Fields of `PUT /flows/ID` that only annotate a flow.
FLOW_ANNOTATIONS: frozenset[str] = frozenset({"marked", "comment"})


def refusal(names: Iterable[str], allowed: Iterable[str]) -> str:
    """The one-line error for a refused option change."""
    listed = ", ".join(sorted(names))
    return (
        f"lmk web does not let {listed} change: it could redirect, rewrite or script traffic, "
        f"weaken TLS or write files. Options that may change here: {', '.join(sorted(allowed))}"
    )


def _comparable(value: object) -> object:
    return tuple(value) if isinstance(value, list | tuple) else value


class OptionGuard:
    """Refuses every option change outside an allow-list once sealed.

    Before `seal`, mitmproxy's addons register their options and the server sets its own.
    `seal(allowed)` records every option's value; from then on, a change to an option outside
    `allowed` raises `OptionsError` (mitmproxy then rolls the whole update back), unless it is
    made by a function wrapped with `trusted` (the gateway's config loader). Run it first in
    the addon chain so no other addon ever acts on a refused value.
    """

    def __init__(self) -> None:
        self.allowed: frozenset[str] | None = None  # None: not sealed yet
        self._values: dict[str, object] = {}
        self._trusted = 0

    def seal(self, allowed: frozenset[str]) -> None:
        self.allowed = allowed
        options = ctx.options
        names: set[str] = options.keys()
        self._values = {name: _comparable(getattr(options, name)) for name in names}

    def trusted[**P, R](self, fn: Callable[P, R]) -> Callable[P, R]:
        """`fn`, whose option changes this guard accepts (and records)."""

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            self._trusted += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self._trusted -= 1

        return wrapper

    def configure(self, updated: set[str]) -> None:
        allowed = self.allowed
        if allowed is None:
            return
        options = ctx.options
        refused = []
        for name in sorted(updated - allowed):
            try:
                value = _comparable(getattr(options, name))
            except Exception:  # fail closed: a change the guard cannot judge is refused
                refused.append(name)
                continue
            if self._trusted or name not in self._values:
                self._values[name] = value  # the config loader, or an option just added
            elif value != self._values[name]:
                refused.append(name)
        if refused:
            raise exceptions.OptionsError(refusal(refused, allowed))


# --------------------------------------------------------------------------------------------
# mitmweb's API
# --------------------------------------------------------------------------------------------

_NO_RESEND = (
    "lmk web shows flows; it does not {what}: a request sent from here would carry a real "
    "provider key to wherever it was edited to go. Use a client through the proxy instead"
)


def _forbid(handler: Any, message: str) -> None:
    handler.set_status(403)
    handler.write({"error": message})


class _GuardedOptions(app.Options):
    """PUT /options: options mitmproxy does not even load here get the same refusal."""

    def put(self) -> None:
        update = self.json
        if not isinstance(update, dict):
            raise app.APIError(400, "expected a JSON object of option names and values")
        guard = _option_guard(self)
        allowed = guard.allowed if guard and guard.allowed is not None else UI_OPTIONS
        unknown = [name for name in update if name not in allowed and name not in ctx.options]
        if unknown:
            raise app.APIError(400, refusal(unknown, allowed))
        super().put()


class _GuardedCommand(app.ExecuteCommand):
    """POST /commands/NAME: only `SAFE_COMMANDS` (no `set`, `script.run`, `save.file`, ...)."""

    def post(self, cmd: str) -> None:
        if cmd not in SAFE_COMMANDS:
            safe = ", ".join(sorted(SAFE_COMMANDS))
            _forbid(self, f"lmk web does not run the command {cmd!r}: only {safe}")
            return
        super().post(cmd)


class _GuardedFlow(app.FlowHandler):
    """PUT /flows/ID: marks and comments only; a request or response is never edited."""

    def put(self, flow_id: str) -> None:
        update = self.json
        if not isinstance(update, dict) or not set(update) <= FLOW_ANNOTATIONS:
            _forbid(self, _NO_RESEND.format(what="edit requests or responses"))
            return
        super().put(flow_id)


class _NoReplay(app.ReplayFlow):
    def post(self, flow_id: str) -> None:
        _forbid(self, _NO_RESEND.format(what="replay flows"))


class _NoContentEdit(app.FlowContent):
    def post(self, flow_id: str, message: str) -> None:
        _forbid(self, _NO_RESEND.format(what="edit requests or responses"))


class _NoFlowImport(app.DumpFlows):
    async def post(self) -> None:
        _forbid(
            self,
            "lmk web does not load flow files: a loaded flow would run through the gateway "
            "(audit rows, key swap) as if a client had sent it",
        )


_FLOW = r"/flows/(?P<flow_id>[0-9a-f\-]+)"
GUARDED_HANDLERS: list[tuple[str, type]] = [
    (r"/options(?:\.json)?", _GuardedOptions),
    (r"/commands/(?P<cmd>[a-z.]+)", _GuardedCommand),
    (r"/flows/dump", _NoFlowImport),
    (_FLOW, _GuardedFlow),
    (_FLOW + r"/replay", _NoReplay),
    (_FLOW + r"/(?P<message>request|response|messages)/content.data", _NoContentEdit),
]


def _option_guard(handler: Any) -> OptionGuard | None:
    guard = handler.master.addons.get("optionguard")
    return guard if isinstance(guard, OptionGuard) else None


def guard_api(application: app.Application) -> None:
    """Route the endpoints above to their guarded handlers (tornado tries these routes first),
    and log requests without their query string."""
    application.add_handlers(r".*", GUARDED_HANDLERS)
    application.settings["log_function"] = log_request


# --------------------------------------------------------------------------------------------
# The token in logs
# --------------------------------------------------------------------------------------------

access_log = logging.getLogger("tornado.access")


def log_request(handler: Any) -> None:
    """tornado's access-log line, with the path only: the query string may carry ?token=."""
    status = handler.get_status()
    if status < 400:
        level = logging.INFO
    elif status < 500:
        level = logging.WARNING
    else:
        level = logging.ERROR
    request = handler.request
    access_log.log(
        level,
        "%d %s %s (%s) %.2fms",
        status,
        request.method,
        request.path,
        request.remote_ip,
        1000.0 * request.request_time(),
    )


_hidden: list[str] = []


def hide_in_logs(secret: str, placeholder: str = "[mitmweb token]") -> None:
    """Replace `secret` in every log record made from now on, whoever logs it."""
    if not secret or secret in _hidden:
        return
    _hidden.append(secret)
    make_record: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

    def record_without_secret(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call: leave it to logging's own error handling
            return record
        if secret in message:
            record.msg, record.args = message.replace(secret, placeholder), None
        return record

    logging.setLogRecordFactory(record_without_secret)
