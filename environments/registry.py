"""The environment registry: workers write their registration and heartbeats to Redis; the supervisor mirrors them.

Redis holds one hash field per environment (contract.ENVIRONMENTS_KEY) with the whole registration as JSON, so a
heartbeat restores an entry that a Redis restart lost, and the supervisor reads every environment in one HGETALL.
"""

import json
import time
from datetime import datetime, timezone as dt_timezone

from django.conf import settings

from supervisor_project import bulk
from supervisor_project.contract import ENVIRONMENTS_KEY

from .models import Environment

MIRRORED_FIELDS = ("url", "proxy_url", "version", "host", "pid", "last_heartbeat_at", "stopped_at")


def _ts(value):
    return None if value is None else datetime.fromtimestamp(value, tz=dt_timezone.utc)


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


def sync(redis):
    """Mirror Redis registrations into the database: new environments are created, changed ones updated.

    Costs one HGETALL and one SELECT whatever the number of environments, plus one UPDATE for what changed
    (every heartbeat since the last call) and one INSERT for new environments.
    Raises redis.ConnectionError when Redis is unavailable; callers then show the last mirrored state.
    """
    entries = read(redis)
    # Plain rows to compare against: most calls find nothing or a few heartbeats changed, and building a model
    # instance per environment would cost more than the rest of the page.
    mirrored = {row[0]: row[1:] for row in Environment.objects.values_list("name", "pk", *MIRRORED_FIELDS)}
    created, changed = [], []
    for name, entry in entries.items():
        values = {
            "url": entry["url"],
            "proxy_url": entry.get("proxy_url") or "",
            "version": str(entry.get("version") or ""),
            "host": str(entry.get("host") or ""),
            "pid": entry.get("pid"),
            "last_heartbeat_at": _ts(entry.get("heartbeat_at")),
            "stopped_at": _ts(entry.get("stopped_at")),
        }
        row = mirrored.get(name)
        if row is None:
            created.append(Environment(name=name, **values))
        elif row[1:] != tuple(values[field] for field in MIRRORED_FIELDS):
            changed.append(Environment(pk=row[0], name=name, **values))
    if created:
        Environment.objects.bulk_create(created, ignore_conflicts=True)
    bulk.update(changed, MIRRORED_FIELDS)
    return len(created), len(changed)
