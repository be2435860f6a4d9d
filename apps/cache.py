"""The configuration cache in Redis: what workers (and the proxy) know of each application.

The supervisor database is the source of truth; this cache is rebuilt from it whenever Redis has lost it.
"""

import json

from supervisor_project.contract import APPS_KEY, CACHE_READY_KEY

from .models import Application


def publish(redis, application):
    redis.hset(APPS_KEY, application.name, json.dumps(application.cache_entry()))


def unpublish(redis, name):
    redis.hdel(APPS_KEY, name)


def rebuild(redis):
    """Write every application's entry, then mark the cache complete."""
    entries = {app.name: json.dumps(app.cache_entry()) for app in Application.objects.with_placements()}
    pipe = redis.pipeline()
    pipe.delete(APPS_KEY)
    if entries:
        pipe.hset(APPS_KEY, mapping=entries)
    pipe.set(CACHE_READY_KEY, "1")
    pipe.execute()
    return len(entries)


def ensure(redis):
    """Rebuild the cache if Redis came back without it (restart, flush). Returns True when it rebuilt."""
    if redis.exists(CACHE_READY_KEY):
        return False
    rebuild(redis)
    return True


def lookup(redis, name):
    """An application's cached configuration, or None when it is not known."""
    raw = redis.hget(APPS_KEY, name)
    return json.loads(raw) if raw else None
