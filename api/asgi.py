"""Two small ASGI helpers shared by the pure-ASGI middlewares (body limit, gate fast path,
store proxy): read a whole request body, answer with JSON bytes."""

from __future__ import annotations

from starlette.types import Message, Receive, Send


async def read_body(receive: Receive) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        body.extend(message.get("body", b""))
        if not message.get("more_body"):
            return bytes(body)


async def answer(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A complete response: JSON unless ``headers`` say otherwise."""
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            *(headers if headers is not None else [(b"content-type", b"application/json")]),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})
