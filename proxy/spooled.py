"""Reading the request body daphne has spooled, at the pace of whoever reads it, so it is never all in memory.

Daphne (4.2, on Twisted) calls an application only once the whole request body has arrived: Twisted writes it to a
temporary file as it comes (on disk, unless fewer than 100,000 bytes were announced: twisted.web.http's
_getContentFile). Then, before the application has run at all, daphne copies that whole file, 8 KiB at a time, into
the application's input queue, which has no bound (daphne.http_protocol.WebRequest.process). So every upload sits
whole in the process's memory however the application reads it: measured, a 100 MiB POST through the access proxy
took the supervisor from 92 MiB to 195 MiB RSS, and it stayed there.

``paced(receive, send)`` is called while daphne creates the application, that is before it fills the queue. It keeps
the body's messages out of the queue (daphne puts them with ``put_nowait``, looked up on the queue each time; and
finds the file already read to its end) and answers ``receive()`` from the spooled file instead, one chunk per call; any other message (``http.disconnect``)
still goes through the queue. Under another server, or a daphne that does not look like this one, RECEIVE is
returned as it is.
"""

import asyncio
import functools
import io

CHUNK = 64 * 1024


def _spooling_request(receive, send):
    """The daphne request behind RECEIVE and SEND, if its body is spooled and not yet queued; else None."""
    queue = getattr(receive, "__self__", None)
    if not isinstance(queue, asyncio.Queue) or getattr(receive, "__func__", None) is not asyncio.Queue.get:
        return None
    if not isinstance(send, functools.partial) or not send.args:
        return None
    request = send.args[0]
    content = getattr(request, "content", None)
    # application_queue is set right after the application is made, and the body queued right after that.
    if getattr(request, "application_queue", True) is not None or not isinstance(content, io.IOBase):
        return None
    if content.closed or not content.seekable():
        return None
    return request


class _SpooledBody:
    """``receive`` for one request: the spooled body chunk by chunk, then the queue's messages."""

    def __init__(self, queue, content):
        self._queue = queue
        self._content = content
        self._offset = 0
        # Left at its end, daphne's copying loop reads nothing; every read here seeks to its own offset.
        self._size = content.seek(0, io.SEEK_END)
        self._done = False
        queue.put_nowait = self._keep_body_out(queue.put_nowait)

    @staticmethod
    def _keep_body_out(put_nowait):
        def put(message):
            if message.get("type") != "http.request":  # the body is read from the file instead
                put_nowait(message)

        return put

    async def receive(self):
        if self._done:
            return await self._queue.get()
        try:
            self._content.seek(self._offset)
            chunk = self._content.read(CHUNK)
        except ValueError:  # Twisted closed the file: the connection was lost
            self._done = True
            return {"type": "http.disconnect"}
        self._offset += len(chunk)
        more = bool(chunk) and self._offset < self._size
        self._done = not more
        return {"type": "http.request", "body": chunk, "more_body": more}


def paced(receive, send):
    """A ``receive`` that reads daphne's spooled request body as it is asked for, or RECEIVE itself."""
    request = _spooling_request(receive, send)
    if request is None:
        return receive
    return _SpooledBody(receive.__self__, request.content).receive
