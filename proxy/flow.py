"""Back-pressure for the response body, so a slow client never makes the proxy hold a whole download in memory.

ASGI servers are meant to make ``send`` wait while the client is not reading; daphne does not: every body chunk is
written into Twisted's transport buffer at once, so a 1 GB download to a slow client would sit in the supervisor's
memory. Twisted itself has the mechanism — a streaming producer registered on the request is paused while the
transport's buffer is full and resumed when it drains, and stopped when the connection is lost — so under daphne the
proxy registers one and waits on it between chunks. Under any other server (whose ``send`` already waits, or which
is not Twisted) the gate stays open and does nothing.
"""

import asyncio
import functools
import logging

logger = logging.getLogger("appsup.proxy")


def _daphne_request(send):
    """The Twisted request behind daphne's ``send`` (``partial(server.handle_reply, protocol)``), or None."""
    if not isinstance(send, functools.partial) or not send.args:
        return None
    request = send.args[0]
    if not (hasattr(request, "registerProducer") and hasattr(request, "unregisterProducer")):
        return None
    if getattr(request, "channel", None) is None or getattr(request, "producer", None) is not None:
        return None
    return request


class WriteGate:
    """Open while the client keeps up; ``stopped`` once its connection is gone. A Twisted IPushProducer."""

    def __init__(self, send):
        self._open = asyncio.Event()
        self._open.set()
        self.stopped = False
        self._request = _daphne_request(send)
        if self._request is not None:
            try:
                self._request.registerProducer(self, True)
            except Exception:  # an unexpected Twisted version: run without back-pressure rather than fail
                logger.warning("could not register the proxy's producer; responses are not flow-controlled")
                self._request = None
            else:
                if getattr(self._request.channel, "_waitingForTransport", False):
                    self._open.clear()

    # IPushProducer, called by Twisted on the event loop's thread (daphne runs Twisted on asyncio).
    def pauseProducing(self):
        self._open.clear()

    def resumeProducing(self):
        self._open.set()

    def stopProducing(self):
        self.stopped = True
        self._open.set()

    async def wait(self):
        """Return once the client can take more (or has gone: check ``stopped``)."""
        if not self._open.is_set():
            await self._open.wait()

    def abort(self):
        """Close the client's connection mid-response (the answer cannot be completed). False if not possible."""
        request = self._request
        if request is None:
            return False
        self.release()
        channel = getattr(request, "channel", None)
        if channel is not None:
            channel.loseConnection()
        return True

    def release(self):
        """Unregister before the response finishes (Twisted complains about a producer left registered)."""
        request, self._request = self._request, None
        if request is not None and getattr(request, "channel", None) is not None and request.producer is self:
            request.unregisterProducer()
