"""The events socket, ``/ws/events/``: one JSON object per change (live.stream), for the admin's pages and for
automation with the API token (live.access says who may connect)."""

import asyncio
import json
import logging

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from . import access, stream

log = logging.getLogger("appsup.live")

PATH = "/ws/events/"
# Sent, then the socket closed with the refusal's code, when a client may not connect: the server would answer a
# refused handshake with a bare 403, and the client deserves to know why.
REFUSED = "refused"


class EventsConsumer(AsyncWebsocketConsumer):
    queue = None
    forwarder = None

    async def connect(self):
        await self.accept()
        refusal = await database_sync_to_async(access.refusal)(self.scope)  # a session's permissions are read
        if refusal is not None:
            log.info("events socket refused (%s): %s", refusal.code, refusal.message)
            await self.send(json.dumps({"type": REFUSED, "error": refusal.message}))
            await self.close(code=refusal.code)
            return
        self.queue = stream.hub.subscribe()
        self.forwarder = asyncio.ensure_future(self.forward())

    async def forward(self):
        try:
            while True:
                await self.send(json.dumps(await self.queue.get()))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the client went away mid-send; its disconnect ends the rest
            log.debug("events socket: sending failed: %s", exc)

    async def receive(self, text_data=None, bytes_data=None):
        pass  # clients only listen

    async def disconnect(self, code):
        if self.forwarder is not None:
            self.forwarder.cancel()
        if self.queue is not None:
            stream.hub.unsubscribe(self.queue)


def events_socket():
    """The ASGI application of /ws/events/: sessions and users from cookies (channels), then the consumer."""
    return AuthMiddlewareStack(EventsConsumer.as_asgi())
