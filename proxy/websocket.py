"""Forwarding a WebSocket under /apps/<name>/ to the worker, message by message, in both directions.

The worker's handshake is done first; only when it accepts is the client accepted (with the subprotocol the worker
chose). A refusal anywhere is a close before accept, which the server answers with HTTP 403.
"""

import asyncio
import logging
from urllib.parse import urlsplit

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from . import headers as h
from . import networks, upstream

logger = logging.getLogger("appsup.proxy")

# The WebSocket handshake headers belong to each hop; websockets makes its own for the worker.
HANDSHAKE_HEADERS = frozenset(
    {b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions", b"sec-websocket-protocol",
     b"sec-websocket-accept", b"content-length", b"user-agent"}
)
MAX_MESSAGE = 16 * 1024 * 1024


class _connect(connect):
    """websockets' connect, without following redirects: the worker's address is the only target."""

    def process_redirect(self, exc):
        return exc


def _closable(code, server_side):
    """A close code the receiving side accepts: 1000 and 3000-4999 always; the protocol's own other codes only
    towards the worker (a server may refuse to send them)."""
    if code == 1000 or (code is not None and 3000 <= code <= 4999):
        return code
    if not server_side and code in (1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011):
        return code
    return 1000


async def refuse(scope, receive, send, reason):
    """Refuse the handshake (the client sees HTTP 403)."""
    message = await receive()
    if message["type"] == "websocket.connect":
        logger.info("websocket %s refused: %s", scope.get("path"), reason)
        await send({"type": "websocket.close", "code": 1000})


async def forward(scope, receive, send, incoming, target):
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    base = urlsplit(target.base_url)
    secure = base.scheme == "https"
    path = base.path.rstrip("/") + incoming.raw_path.decode("latin-1")
    if incoming.query:
        path += "?" + incoming.query.decode("latin-1")
    # The URI carries the client's Host (as HTTP forwarding does); the connection goes to the registered address.
    host = h.client_host(scope)
    authority = host.decode("latin-1") if host else base.netloc
    uri = f"{'wss' if secure else 'ws'}://{authority}{path}"
    port = base.port or (443 if secure else 80)
    connect_to = {"port": port}
    if secure:
        connect_to["server_hostname"] = base.hostname
    extra = [(k.decode("latin-1"), v.decode("latin-1"))
             for k, v in h.forwarded_request_headers(scope, incoming, base.netloc.encode(), skip=HANDSHAKE_HEADERS)
             if k != b"host"]
    user_agent = h.get(scope.get("headers") or (), b"user-agent")
    try:
        # Resolved and checked here, and the connection made to that address: no second lookup to rebind.
        connect_to["host"] = await networks.connect_address(base.hostname, port)
        worker = await _connect(
            uri,
            additional_headers=extra,
            user_agent_header=user_agent.decode("latin-1") if user_agent else None,
            subprotocols=scope.get("subprotocols") or None,
            proxy=None,
            open_timeout=upstream.connect_timeout(),
            max_size=MAX_MESSAGE,
            **connect_to,
        )
    except Exception as exc:  # refused, unreachable, timed out, or not a WebSocket server: the client is refused
        if isinstance(exc, InvalidStatus):
            detail = f"the worker answered {exc.response.status_code}"
        elif isinstance(exc, networks.RefusedTarget):
            detail = f"its address is not an allowed proxy target: {exc.reason}"
        else:
            detail = str(exc) or exc.__class__.__name__
        logger.warning("websocket %s on %s (%s): %s", scope.get("path"), target.environment, target.base_url, detail)
        await send({"type": "websocket.close", "code": 1000})
        return

    await send({"type": "websocket.accept", "subprotocol": worker.subprotocol})

    async def client_to_worker():
        while True:
            msg = await receive()
            if msg["type"] == "websocket.receive":
                data = msg.get("text")
                if data is None:
                    data = msg.get("bytes") or b""
                try:
                    await worker.send(data)
                except ConnectionClosed:
                    return
            elif msg["type"] == "websocket.disconnect":
                await worker.close(code=_closable(msg.get("code", 1000), server_side=False))
                return

    async def worker_to_client():
        try:
            async for data in worker:
                if isinstance(data, str):
                    await send({"type": "websocket.send", "text": data})
                else:
                    await send({"type": "websocket.send", "bytes": data})
        except ConnectionClosed:
            pass
        code = worker.close_code if worker.close_code is not None else 1000
        await send({"type": "websocket.close", "code": _closable(code, server_side=True)})

    tasks = [asyncio.ensure_future(client_to_worker()), asyncio.ensure_future(worker_to_client())]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await worker.close()
