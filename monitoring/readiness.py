"""Readiness of a web process, supervisor or worker (GET /readyz): does its database answer, does Redis?

Each check reads only (a SELECT 1, a PING). Redis is asked on a connection of its own with a one-second timeout, so
a hung Redis answers the probe in about a second instead of the five seconds the shared clients wait
(exchange.redis_client). Used by both roles' URLconfs through supervisor_project.views; it imports neither side.
"""

import threading

import redis
from django.conf import settings
from django.db import DatabaseError, connection

from exchange import redis_client

CHECK_TIMEOUT = 1.0

_lock = threading.Lock()
_clients = {}


def _probe_client(url):
    url = redis_client.resolve_url(url)
    with _lock:
        client = _clients.get(url)
        if client is None:
            client = redis.Redis.from_url(url, socket_timeout=CHECK_TIMEOUT, socket_connect_timeout=CHECK_TIMEOUT)
            _clients[url] = client
        return client


def reset():
    """Forget the probe's connections (tests switch servers)."""
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


def database():
    """None when the database answers, else why not."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        return _one_line(exc)
    return None


def _redis(url):
    try:
        _probe_client(url).ping()
    except redis.RedisError as exc:
        return _one_line(exc)
    return None


def problems():
    """{what: why} for each of the database and Redis (none in a single instance) that does not answer; empty when
    all do. Redis is named "redis", or "redis (commands)" for the command channel's when it is another server."""
    if settings.APP_MODE == "":  # a single instance uses no Redis: its database is all it needs
        return {what: why for what, why in {"database": database()}.items() if why is not None}
    found = {"database": database(), "redis": _redis(settings.APP_SUPERVISOR_REDIS_URL)}
    if (settings.APP_COMMAND_REDIS_URL or "") != (settings.APP_SUPERVISOR_REDIS_URL or ""):
        found["redis (commands)"] = _redis(settings.APP_COMMAND_REDIS_URL)
    return {what: why for what, why in found.items() if why is not None}


def _one_line(exc):
    return " ".join(str(exc).split()) or type(exc).__name__
