"""Knowing when the client of a proxied answer has gone, so the proxy stops reading the worker's answer for nobody.

Back-pressure itself is the server's: uvicorn's ``send`` waits while the client is not reading, so a slow client
never makes the proxy hold a whole download in memory. But once the client has disconnected, ``send`` returns
quietly and the body would be read from the worker to its end. The ASGI way to learn of it is ``receive()``
answering ``http.disconnect``; a task waits on it, started only once the request body has been read, as nothing
else may call ``receive`` then.
"""

import asyncio


class ClientWatch:
    def __init__(self, receive):
        self._receive = receive
        self._task = None

    def start(self):
        if self._task is None:
            self._task = asyncio.ensure_future(self._receive())

    def gone(self):
        return self._task is not None and self._task.done()

    def close(self):
        if self._task is not None and not self._task.done():
            self._task.cancel()
