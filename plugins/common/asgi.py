"""Small pieces every raw-ASGI server of the built-in plugins needs (apiserver, cloudhub's bootstrap,
cloudstream's kubelet API, router, servicebus, metaserver), written once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def serve_lifespan(receive: Any, send: Any) -> None:
    """Answer ASGI's lifespan protocol until shutdown (hypercorn fails an app that just returns on it)."""
    while True:
        event = await receive()
        if event["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif event["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def read_body(scope: dict[str, Any], receive: Any, limit: int) -> bytes | None:
    """The request body, or None when it is over ``limit`` bytes (refused on Content-Length before reading)."""
    for key, value in scope.get("headers", []):
        if key.lower() == b"content-length" and value.isdigit() and int(value) > limit:
            return None
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            break
        chunk = event.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not event.get("more_body"):
            break
    return b"".join(chunks)
