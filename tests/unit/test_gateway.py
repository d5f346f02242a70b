"""The steps as one addon: each hook runs along the steps in order, awaiting async ones."""

from __future__ import annotations

import asyncio

from llamakey.gateway import Gateway, gateway_addons
from llamakey.state import GatewayState


class Step:
    def __init__(self, name: str, seen: list[str], *, slow: bool = False) -> None:
        self.name, self.seen, self.slow = name, seen, slow

    def requestheaders(self, flow: object) -> None:
        self.seen.append(f"{self.name}.requestheaders")


class AsyncStep(Step):
    async def request(self, flow: object) -> None:
        await asyncio.sleep(0)  # yields: the next step must still wait for this one
        self.seen.append(f"{self.name}.request")


class SyncRequest(Step):
    def request(self, flow: object) -> None:
        self.seen.append(f"{self.name}.request")


async def test_hooks_run_in_order_and_async_steps_are_awaited() -> None:
    seen: list[str] = []
    gateway = Gateway([SyncRequest("a", seen), AsyncStep("b", seen), SyncRequest("c", seen)])
    assert gateway.requestheaders(object()) is None  # all synchronous: no coroutine made
    pending = gateway.request(object())
    assert seen[-1] == "a.request"  # ran at once, up to the first step that awaits
    assert pending is not None
    await pending
    assert seen == [
        "a.requestheaders",
        "b.requestheaders",
        "c.requestheaders",
        "a.request",
        "b.request",
        "c.request",
    ]


def test_the_gateway_dispatches_every_hook_its_steps_implement() -> None:
    """A step's hook the gateway does not forward would silently never run."""
    from mitmproxy import hooks

    # mitmproxy registers the hook classes as their modules are imported.
    from mitmproxy.proxy import server_hooks  # noqa: F401
    from mitmproxy.proxy.layers import http, websocket  # noqa: F401

    steps = gateway_addons(GatewayState())
    needed = {name for step in steps for name in hooks.all_hooks if hasattr(step, name)}
    assert needed <= {name for name in hooks.all_hooks if hasattr(Gateway, name)}
    assert "request" in needed and "websocket_message" in needed
