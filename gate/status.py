"""The gate's small local status page: the last decisions and the queue depth.

Bound to 127.0.0.1 only (it shows masked IDs, but still: the guard's screen, not the
network's). ``/`` is an HTML page that refreshes itself every 2 s; ``/status.json`` the
same as JSON. Plain asyncio streams, HTTP/1.0, one response per connection: a page
for one browser does not need a web framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from html import escape

StatusFn = Callable[[], dict[str, object]]

COLOURS = {"green": "#1b873f", "yellow": "#b58900", "red": "#c0392b", "none": "#666"}


def render_html(status: dict[str, object]) -> str:
    rows = []
    recent = status.get("recent")
    for line in recent if isinstance(recent, list) else []:
        colour = COLOURS.get(str(line.get("colour")), "#666")
        reasons = "; ".join(str(r) for r in line.get("reasons") or [])
        rows.append(
            "<tr>"
            f"<td>{escape(str(line.get('ts', '')))}</td>"
            f"<td>{escape(str(line.get('person_id') or line.get('kind', '')))}</td>"
            f"<td style='color:{colour};font-weight:bold'>{escape(str(line.get('decision')))}"
            f" ({escape(str(line.get('colour')))})</td>"
            f"<td>{escape(str(line.get('source')))}</td>"
            f"<td>{escape(reasons)}</td>"
            "</tr>"
        )
    online = status.get("checks_online")
    state = {True: "online", False: "OFFLINE", None: "no check yet"}.get(
        online if isinstance(online, bool) else None, "?"
    )
    head = (
        f"<h1>Gate {escape(str(status.get('checkpoint_id')))}: {state}</h1>"
        f"<p>queue depth: <b>{escape(str(status.get('queue_depth')))}</b>; "
        f"offline policy: {escape(str(status.get('offline_policy')))}; "
        f"frames: {escape(str(status.get('frames')))}; "
        f"last send error: {escape(str(status.get('last_error') or '-'))}</p>"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta http-equiv='refresh' content='2'><title>dancu gate</title></head>"
        "<body style='font-family:sans-serif'>"
        f"{head}<table border='1' cellpadding='4' style='border-collapse:collapse'>"
        "<tr><th>time</th><th>card</th><th>decision</th><th>source</th><th>reasons</th></tr>"
        f"{''.join(rows)}</table></body></html>"
    )


async def _handle(
    status: StatusFn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        request = await asyncio.wait_for(reader.readline(), 5)
        while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
            pass  # headers: not needed
        parts = request.decode("latin-1").split()
        method, path = (parts[0], parts[1].split("?")[0]) if len(parts) >= 2 else ("", "")
        if method != "GET":
            code, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
        elif path == "/status.json":
            code, ctype = "200 OK", "application/json"
            body = json.dumps(status(), ensure_ascii=False).encode()
        elif path == "/":
            code, ctype, body = "200 OK", "text/html; charset=utf-8", render_html(status()).encode()
        else:
            code, ctype, body = "404 Not Found", "text/plain", b"not found: try / or /status.json\n"
        writer.write(
            f"HTTP/1.0 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
    except (TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def serve_status(status: StatusFn, port: int, host: str = "127.0.0.1") -> asyncio.Server:
    """Start the status page (close the returned server to stop it)."""
    return await asyncio.start_server(lambda r, w: _handle(status, r, w), host, port)
