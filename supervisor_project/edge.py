"""Bounded request heads for every web process: uvicorn's httptools protocol with a size and a time limit.

uvicorn with httptools accepts a request line and headers of any size (the parser gathers a header value in memory
until its line ends: 8 connections each sending a 64 MiB header took a supervisor from 80 MB to over 1 GB) and
waits forever for a head that never ends (a connection that sends one byte now and then is held as long as it
likes). Here, every web process (``uvicorn --http supervisor_project.edge:BoundedHttpToolsProtocol``, see
``supervisor_project.web.web_args``):

* answers 431 and closes once a request's head (request line and headers) passes APP_MAX_HEADER_BYTES, having
  fed the parser no more than that, so a connection costs at most that plus one read of the socket;
* closes a connection whose head has not ended APP_HEAD_TIMEOUT seconds after it began, or after the connection
  opened for its first request (408 if any of it came, silently if nothing did).

Bodies are not counted: they stream to the application as uvicorn hands them over (the access proxy bounds them
with APP_PROXY_MAX_BODY). Time between requests on a keep-alive connection is uvicorn's own --timeout-keep-alive.
Still httptools underneath, for speed: measured on a 5-byte page (wrk, 20 keep-alive connections), the server
spent about 18 µs of CPU per request with uvicorn's httptools protocol, 19–22 µs with this one, and 75 µs with h11's
(which has a size limit of its own, but no time limit either).
"""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from supervisor_project.config import DEFAULT_HEAD_TIMEOUT, DEFAULT_MAX_HEADER_BYTES


def _limits():
    """(APP_MAX_HEADER_BYTES, APP_HEAD_TIMEOUT) of the process's settings, the defaults without Django."""
    try:
        return settings.APP_MAX_HEADER_BYTES, settings.APP_HEAD_TIMEOUT
    except (ImproperlyConfigured, AttributeError):  # no Django settings (a bare ASGI app): the defaults
        return DEFAULT_MAX_HEADER_BYTES, DEFAULT_HEAD_TIMEOUT


def _response(status, message):
    body = message.encode("ascii")
    return b"".join([
        STATUS_LINE[status],
        b"content-type: text/plain; charset=utf-8\r\n",
        b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
        b"connection: close\r\n\r\n",
        body,
    ])


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    limits = None  # (max head bytes, head timeout), read from the settings at the first connection

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if BoundedHttpToolsProtocol.limits is None:
            BoundedHttpToolsProtocol.limits = _limits()
        self.max_head_bytes, self.head_timeout = self.limits
        self.head_bytes = None  # bytes of the current head so far; None while none is being read
        self.head_timer = None
        self.in_head = False  # between a head's first byte and its end

    # -- time ----------------------------------------------------------------------------------------------------

    def _arm_head_timer(self):
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _disarm_head_timer(self):
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self):
        self.head_timer = None
        if self.transport.is_closing():
            return
        if self.head_bytes:
            self.logger.info("Request head not received within %g s; closing the connection.", self.head_timeout)
            self.transport.write(_response(408, f"The request head did not arrive within {self.head_timeout:g} s."))
        self.transport.close()

    def connection_made(self, transport):
        super().connection_made(transport)
        self.head_bytes = 0
        self._arm_head_timer()  # a connection that never sends anything is closed too

    def connection_lost(self, exc):
        self._disarm_head_timer()
        super().connection_lost(exc)

    # -- size ----------------------------------------------------------------------------------------------------

    def data_received(self, data):
        if self.head_bytes is None:  # a request body: streamed as uvicorn streams it
            super().data_received(data)
            return
        room = self.max_head_bytes - self.head_bytes
        if len(data) <= room:
            self.head_bytes += len(data)
            super().data_received(data)
            if self.in_head:
                self._arm_head_timer()  # only now: most heads end in the read that began them, and cost no timer
            return
        # The parser gets no more than the limit; what follows is fed only if the head ended within it.
        self.head_bytes = self.max_head_bytes
        super().data_received(data[:room])
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return  # refused by the parser, or now a WebSocket
        if self.head_bytes == self.max_head_bytes:
            self._head_too_large()
        else:
            self.data_received(data[room:])

    def _head_too_large(self):
        self.logger.info("Request head over %d bytes; answered 431.", self.max_head_bytes)
        self.transport.write(_response(
            431, f"The request line and headers are over {self.max_head_bytes} bytes."))
        self.transport.close()

    # -- parser callbacks ----------------------------------------------------------------------------------------

    def on_message_begin(self):
        super().on_message_begin()
        self.in_head = True

    def on_headers_complete(self):
        self.in_head = False
        self.head_bytes = None
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_message_complete(self):
        self.head_bytes = 0
        super().on_message_complete()
