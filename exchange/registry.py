"""The environment registry: workers write their registration and heartbeats to Redis; the supervisor mirrors them
(environments.mirror).

Redis holds one hash field per environment (contract.ENVIRONMENTS_KEY) with the whole registration as JSON, so a
heartbeat restores an entry that a Redis restart lost, and the supervisor reads every environment in one HGETALL.
"""

import json
import time

from django.conf import settings

from .contract import ENVIRONMENTS_KEY


def announce(redis, registration, now=None):
    """Register or heartbeat: write the full registration with a fresh heartbeat time."""
    entry = dict(registration, heartbeat_at=now if now is not None else time.time(), stopped_at=None)
    redis.hset(ENVIRONMENTS_KEY, registration["name"], json.dumps(entry))
    return entry


def withdraw(redis, registration, now=None):
    """Graceful stop: keep the entry (so it shows), marked stopped, which makes it offline at once."""
    raw = redis.hget(ENVIRONMENTS_KEY, registration["name"])
    entry = json.loads(raw) if raw else dict(registration, heartbeat_at=None)
    entry["stopped_at"] = now if now is not None else time.time()
    redis.hset(ENVIRONMENTS_KEY, registration["name"], json.dumps(entry))


def forget(redis, names):
    """Drop registrations (an operator deleted those environments); a worker still running re-registers."""
    if names:
        redis.hdel(ENVIRONMENTS_KEY, *names)


def is_alive(entry, now=None):
    """Whether a registration's last heartbeat is within the timeout (see Environment.is_online)."""
    heartbeat = entry.get("heartbeat_at")
    now = time.time() if now is None else now
    return heartbeat is not None and now - heartbeat < settings.APP_HEARTBEAT_TIMEOUT


def read(redis):
    """Every registration in Redis, by environment name; malformed entries are skipped."""
    entries = {}
    for name, raw in redis.hgetall(ENVIRONMENTS_KEY).items():
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("url"):
            entries[name.decode()] = entry
    return entries
