"""Forwarding one HTTP request to a worker and streaming its answer back, at the ASGI level.

The request body is streamed to the worker as the server hands it over, at the pace the worker takes it (aiohttp
waits for its socket to drain between chunks, and uvicorn stops reading from the client while its buffer is full);
the response body is streamed to the client chunk by chunk, paced by the client (the server's ``send`` waits), so
neither is ever held whole in memory. A body over APP_PROXY_MAX_BODY is refused: by its Content-Length before
anything is read, or when the count of what streamed passes the limit.
"""

import asyncio
import logging
from urllib.parse import urlsplit

import aiohttp
from django.conf import settings
from yarl import URL

from exchange.cookies import framework_cookie_names

from . import headers as h
from . import networks, targets, upstream
from .flow import ClientWatch

logger = logging.getLogger("appsup.proxy")

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})


class ClientGone(Exception):
    """The client disconnected while its request body was being forwarded."""


class BodyTooLarge(Exception):
    """The request body is over APP_PROXY_MAX_BODY (``limit`` bytes); nothing usable was forwarded."""

    def __init__(self, limit):
        super().__init__(f"the request body is over {limit} bytes")
        self.limit = limit


def max_body():
    """APP_PROXY_MAX_BODY in bytes, or None for no limit (read each time, so tests may change it)."""
    return getattr(settings, "APP_PROXY_MAX_BODY", None)


def _declared_length(scope):
    """The Content-Length the client announced, or None (absent or not a number: the server has framed the body)."""
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class UpstreamFailed(Exception):
    """No usable answer from the worker; ``status`` and ``detail`` say how to tell the client."""

    def __init__(self, status, detail):
        super().__init__(detail)
        self.status = status
        self.detail = detail


class _Body:
    """The request body: ``complete`` bytes when it came in one piece, else an async iterator of its chunks."""

    def __init__(self, limit):
        self.complete = None
        self.stream = None
        self.client_gone = False
        self.limit = limit
        self.too_large = False
        self._count = 0

    def _counted(self, chunk):
        self._count += len(chunk)
        if self.limit is not None and self._count > self.limit:
            self.too_large = True
            raise BodyTooLarge(self.limit)
        return chunk

    @classmethod
    async def read(cls, receive, limit=None):
        """The body as RECEIVE hands it over; BodyTooLarge at once if its first piece is over LIMIT bytes, or
        while it streams when the count passes LIMIT."""
        body = cls(limit)
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        first = body._counted(message.get("body", b""))
        if not message.get("more_body", False):
            body.complete = first
            return body

        async def stream():
            if first:
                yield first
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    body.client_gone = True
                    raise ClientGone()
                chunk = body._counted(msg.get("body", b""))
                if chunk:
                    yield chunk
                if not msg.get("more_body", False):
                    return

        body.stream = stream()
        return body


def _upstream_url(target, incoming):
    base = urlsplit(target.base_url)
    # The registered URL's own path, if any, then the request's path exactly as received (already encoded).
    path = base.path.rstrip("/") + incoming.raw_path.decode("latin-1")
    host = f"[{base.hostname}]" if ":" in base.hostname else base.hostname  # an IPv6 address, in its brackets
    url = URL.build(scheme=base.scheme, host=host, port=base.port, path=path,
                    query_string=incoming.query.decode("latin-1"), encoded=True)
    return url, base.netloc.encode("idna")


def _describe(exc):
    os_error = getattr(exc, "os_error", None)
    text = (os_error.strerror if os_error is not None and os_error.strerror else None) or str(exc)
    return text or exc.__class__.__name__


def _raise_for_body(body):
    """A request that failed while its body streamed failed because of the body, when the body says so."""
    if body.client_gone:
        raise ClientGone() from None
    if body.too_large:
        raise BodyTooLarge(body.limit) from None


async def _open(method, url, req_headers, body):
    session = upstream.session()
    data = body.stream if body.stream is not None else (body.complete or None)
    attempts = 2 if method in IDEMPOTENT and body.stream is None and not body.complete else 1
    for attempt in range(attempts):
        try:
            return await session.request(method, url, headers=req_headers, data=data, allow_redirects=False,
                                         timeout=upstream.timeouts(), proxy=None)
        except aiohttp.ConnectionTimeoutError:
            raise UpstreamFailed(502, f"no connection within {upstream.connect_timeout():g} s") from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, networks.RefusedTarget):
                raise exc.os_error from None  # the resolver refused every address: nothing was connected to
            raise UpstreamFailed(502, f"could not connect ({_describe(exc)})") from None
        except (aiohttp.SocketTimeoutError, asyncio.TimeoutError):
            _raise_for_body(body)
            raise UpstreamFailed(504, f"no answer within {upstream.read_timeout():g} s") from None
        except (ClientGone, BodyTooLarge, networks.RefusedTarget):
            raise
        except (aiohttp.ClientConnectionError, aiohttp.ClientResponseError, aiohttp.ClientPayloadError) as exc:
            _raise_for_body(body)
            # A pooled connection the worker closed just as it was reused: safe to try once more when idempotent.
            if attempt + 1 < attempts:
                continue
            raise UpstreamFailed(502, f"the connection failed ({_describe(exc)})") from None
    raise AssertionError("unreachable")  # pragma: no cover


def withheld_cookies():
    """The names (bytes) of the supervisor's own cookies, which no worker may set through the proxy."""
    return {name.encode("latin-1") for name in (*framework_cookie_names(), targets.ENV_COOKIE)}


def _response_headers(response, target, scope):
    source = [(name.lower(), value) for name, value in response.raw_headers]
    named = h.connection_named(source)
    origin = h.public_origin(scope)
    prefix = (target.prefix or f"{targets.PREFIX}/{target.app}/").encode("latin-1")
    withheld = None
    out = []
    for name, value in source:
        if h.is_hop_by_hop(name, named):
            continue
        if name == b"location":
            value = h.rewrite_location(value, target.known_urls, origin)
        elif name == b"set-cookie":
            withheld = withheld_cookies() if withheld is None else withheld
            confined = h.confined_cookie(value, prefix, withheld)
            if confined is None:
                logger.warning("%s %s on %s: dropped a cookie named as one of the supervisor's own (%s)",
                               scope["method"], scope["path"], target.environment,
                               value.partition(b"=")[0].strip().decode("latin-1"))
                continue
            value = confined
        out.append((name, value))
    if target.remember:
        out.append((b"set-cookie", targets.choice_cookie(target.app, target.environment,
                                                           h.public_scheme(scope) == "https", target.prefix)))
    return out


async def forward(scope, receive, send, incoming, target):
    """Forward the request to TARGET and stream the answer; returns its status (None if the client left before
    it). Raises, before anything was sent: UpstreamFailed, networks.RefusedTarget (TARGET's address is not an
    allowed target) or BodyTooLarge."""
    method = scope["method"]
    limit = max_body()
    declared = _declared_length(scope)
    if limit is not None and declared is not None and declared > limit:
        raise BodyTooLarge(limit)
    url, netloc = _upstream_url(target, incoming)
    networks.check_literal(urlsplit(target.base_url).hostname)  # an IP address goes to no resolver: checked here
    try:
        body = await _Body.read(receive, limit)
    except ClientGone:
        return
    raw_headers = h.forwarded_request_headers(scope, incoming, netloc)
    has_length = any(name == b"content-length" for name, _ in raw_headers)
    if body.complete and not has_length:
        raw_headers.append((b"content-length", str(len(body.complete)).encode()))
    req_headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw_headers]

    try:
        response = await _open(method, url, req_headers, body)
    except ClientGone:
        return
    except UpstreamFailed as failure:
        logger.warning("%s %s on %s (%s): %s", method, scope["path"], target.environment, target.base_url,
                       failure.detail)
        raise

    # A streamed request body may still be going to the worker; receive() is free only once it is read.
    watch = ClientWatch(receive) if body.stream is None else None
    completed = False
    try:
        await send({"type": "http.response.start", "status": response.status,
                    "headers": _response_headers(response, target, scope)})
        try:
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if watch is not None:
                    if watch.gone():
                        return response.status  # the client went away: stop reading from the worker
                    watch.start()  # after the first chunk: most answers are one chunk and never need it
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            # Too late for an error page: raising makes the server cut the connection, so the client sees the
            # answer is incomplete.
            logger.warning("%s %s on %s: the answer broke off (%s)", method, scope["path"], target.environment,
                           _describe(exc) or exc.__class__.__name__)
            raise
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        completed = True
        return response.status
    finally:
        if watch is not None:
            watch.close()
        if completed:
            response.release()  # the connection goes back to the pool
        else:
            response.close()  # a half-read answer: the connection cannot be reused
