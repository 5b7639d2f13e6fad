"""Cancelling a unary gRPC call when the HTTP client goes away.

Starlette does not stop a handler when its client disconnects, so a non-streaming completion
would keep a model (and the user's quota) busy for nobody. A watcher task waits for the ASGI
`http.disconnect` and cancels the call; the gateway then closes its upstream request.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import grpc
from starlette.types import Receive

_Resp = TypeVar("_Resp")


class ClientGone(Exception):
    """The client disconnected before the answer was ready; the call was cancelled."""


async def wait_for_disconnect(receive: Receive) -> None:
    """Return once the client has disconnected (after the request body has been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(call: grpc.aio.UnaryUnaryCall[Any, _Resp], receive: Receive) -> _Resp:
    """The call's reply; raises ClientGone (and cancels the call) if the client leaves first."""
    watcher = asyncio.get_running_loop().create_task(wait_for_disconnect(receive))
    gone = False

    def on_disconnect(task: asyncio.Task[None]) -> None:
        nonlocal gone
        if not task.cancelled() and task.exception() is None:
            gone = True
            call.cancel()

    watcher.add_done_callback(on_disconnect)
    try:
        return await call
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if gone and (current is None or not current.cancelling()):
            raise ClientGone from None  # our cancel, not the server shutting the task down
        raise
    finally:
        watcher.cancel()
