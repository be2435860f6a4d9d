"""What the request path needs to know about one application, read from Redis, never from the supervisor's database.

Used by the worker serving hosted applications and by the supervisor's access proxy on every request, so each
process keeps what it read for at most ``TTL`` seconds: a change (stop, start, a new environment URL) is seen
within a second, and a busy application costs two Redis round trips a second, not two per request.
"""

import json
import threading
import time
from dataclasses import dataclass, field

from exchange.contract import APPS_KEY, ENVIRONMENTS_KEY, STATUSES_KEY, status_field
from exchange.redis_client import supervisor_redis

TTL = 1.0
# Requests for names that do not exist are cached too; past this many entries the expired ones are dropped, so a
# client asking for random names cannot grow the process without bound.
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class AppView:
    name: str
    config: dict  # the configuration cache entry (apps.models.Application.cache_entry)
    environments: dict = field(default_factory=dict)  # name -> registration, for this app's environments
    statuses: dict = field(default_factory=dict)  # environment name -> {state, error, traceback, at}

    @property
    def environment_names(self):
        return list(self.config.get("environments", []))


def _loads(raw):
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def read(name, redis=None):
    """The application's view from Redis, or None when no such application is configured."""
    r = redis or supervisor_redis()
    config = _loads(r.hget(APPS_KEY, name))
    if not config:
        return None
    envs = list(config.get("environments", []))
    if not envs:
        return AppView(name, config)
    pipe = r.pipeline(transaction=False)
    pipe.hmget(ENVIRONMENTS_KEY, envs)
    pipe.hmget(STATUSES_KEY, [status_field(name, env) for env in envs])
    registrations, statuses = pipe.execute()
    return AppView(
        name,
        config,
        {env: reg for env, reg in zip(envs, map(_loads, registrations)) if reg},
        {env: st for env, st in zip(envs, map(_loads, statuses)) if st},
    )


class Directory:
    """A per-process cache of ``read`` results, each kept for TTL seconds (misses too)."""

    def __init__(self, ttl=TTL, clock=time.monotonic):
        self.ttl = ttl
        self.clock = clock
        self._entries = {}
        self._lock = threading.Lock()

    def cached(self, name):
        """``(True, view)`` when a fresh view is in memory, else ``(False, None)``: never goes to Redis, so async
        callers can answer inline and read Redis in a thread only on a miss."""
        with self._lock:
            hit = self._entries.get(name)
        if hit and self.clock() - hit[0] < self.ttl:
            return True, hit[1]
        return False, None

    def lookup(self, name):
        found, view = self.cached(name)
        if found:
            return view
        now = self.clock()
        view = read(name)
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries = {k: v for k, v in self._entries.items() if now - v[0] < self.ttl}
                if len(self._entries) >= MAX_ENTRIES:
                    self._entries.clear()
            self._entries[name] = (now, view)
        return view

    def clear(self):
        with self._lock:
            self._entries.clear()


directory = Directory()
