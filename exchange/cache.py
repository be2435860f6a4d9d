"""The configuration cache in Redis: what workers and the proxy know of each application.

The supervisor's database is the source of truth; the supervisor writes this cache from it (apps.cache) and
rebuilds it whenever Redis has lost it. CACHE_READY_KEY is written last, so its absence means "incomplete".
"""

import json

from .contract import APPS_KEY, CACHE_READY_KEY


def write(redis, name, entry):
    redis.hset(APPS_KEY, name, json.dumps(entry))


def remove(redis, name):
    redis.hdel(APPS_KEY, name)


def replace_all(redis, entries):
    """Write ENTRIES (name -> entry) as the whole cache, then mark it complete, in one transaction."""
    pipe = redis.pipeline()
    pipe.delete(APPS_KEY)
    if entries:
        pipe.hset(APPS_KEY, mapping={name: json.dumps(entry) for name, entry in entries.items()})
    pipe.set(CACHE_READY_KEY, "1")
    pipe.execute()


def size(redis):
    return redis.hlen(APPS_KEY)


def is_ready(redis):
    return bool(redis.exists(CACHE_READY_KEY))


def decode(raw):
    """A cache entry, or None when RAW is missing or malformed."""
    try:
        entry = json.loads(raw) if raw else None
    except ValueError:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("environments", []), list):
        return None
    return entry


def lookup(redis, name):
    """An application's cached configuration, or None when it is not known (or its entry is malformed)."""
    return decode(redis.hget(APPS_KEY, name))


def placed_on(redis, environment):
    """Names of the applications the cache places on ENVIRONMENT."""
    return sorted(
        name.decode()
        for name, raw in redis.hgetall(APPS_KEY).items()
        if environment in ((decode(raw) or {}).get("environments") or [])
    )
