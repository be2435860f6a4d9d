"""The proxy's connections to workers: one pooled HTTP client per process (per event loop, strictly), and timeouts.

The client is aiohttp's, set up to add nothing of its own to what it forwards: no default headers (an
``Accept-Encoding`` the browser did not send would hand it a body it cannot read), no cookie jar (it would collect
every user's session cookies), no decompression, no redirects followed, nothing read from the process's environment
(proxies, .netrc), and the request target sent exactly as received (the URL is built already encoded). It resolves
names through proxy.networks.CheckedResolver, so it connects only to addresses APP_PROXY_ALLOWED_NETWORKS allows.

Why aiohttp rather than httpx: on this project's 2-core machines the proxy shares the CPU with workers, so what it
spends per request matters. Measured against the same upstream, httpx's transport (httpcore 1.0.9) spent about
750 µs of CPU per request, most of it scanning its pool on every request; aiohttp spends about 75 µs.
"""

import asyncio
import ssl
import weakref

import aiohttp
from django.conf import settings

from supervisor_project.config import DEFAULT_PROXY_CONNECT_TIMEOUT, DEFAULT_PROXY_READ_TIMEOUT

from . import networks

# Enough for any realistic number of concurrent requests to a handful of workers; past it, requests wait for a
# free connection (within the connect timeout) rather than opening sockets without bound.
MAX_CONNECTIONS = 512
# Shorter than the idle timeout of the server workers run (uvicorn's --timeout-keep-alive, 5 s by default), so a
# pooled connection is rarely closed under us (a POST on one would fail: only idempotent requests are retried).
KEEPALIVE_EXPIRY = 4.0
# Headers aiohttp would add to a request on its own.
NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")

_sessions = weakref.WeakKeyDictionary()  # event loop -> aiohttp.ClientSession


def _setting(name, config_attr, default):
    value = getattr(settings, name, None)
    if value is None:
        config = getattr(settings, "CONFIG", None)
        value = getattr(config, config_attr, default)
    return float(value)


def connect_timeout():
    """Seconds to get a connection to a worker (APP_PROXY_CONNECT_TIMEOUT)."""
    return _setting("APP_PROXY_CONNECT_TIMEOUT", "proxy_connect_timeout", DEFAULT_PROXY_CONNECT_TIMEOUT)


def read_timeout():
    """Seconds to wait for the next bytes of a worker's answer (APP_PROXY_READ_TIMEOUT)."""
    return _setting("APP_PROXY_READ_TIMEOUT", "proxy_read_timeout", DEFAULT_PROXY_READ_TIMEOUT)


_timeouts = {}


def timeouts():
    """The aiohttp timeouts for one request (settings are read each time, so tests may change them)."""
    key = (connect_timeout(), read_timeout())
    value = _timeouts.get(key)
    if value is None:
        connect, read = key
        value = _timeouts[key] = aiohttp.ClientTimeout(total=None, connect=connect, sock_connect=connect,
                                                       sock_read=read)
    return value


def session():
    """The process's client for workers, made on first use in the running event loop."""
    loop = asyncio.get_running_loop()
    existing = _sessions.get(loop)
    if existing is None or existing.closed:
        connector = aiohttp.TCPConnector(
            limit=MAX_CONNECTIONS,
            limit_per_host=0,
            keepalive_timeout=KEEPALIVE_EXPIRY,
            ssl=ssl.create_default_context(),
            resolver=networks.CheckedResolver(),
        )
        existing = _sessions[loop] = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=NO_AUTO_HEADERS,
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None),
            requote_redirect_url=False,
        )
    return existing


async def close():
    """Close the running loop's client (at shutdown)."""
    existing = _sessions.pop(asyncio.get_running_loop(), None)
    if existing is not None:
        await existing.close()
