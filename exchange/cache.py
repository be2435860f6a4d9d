"""The configuration cache in Redis: what workers and the proxy know of each application.

The supervisor's database is the source of truth; the supervisor writes this cache from it (apps.cache) and
rebuilds it whenever Redis has lost it. CACHE_READY_KEY is written last, so its absence means "incomplete".
"""

from . import signing
from .contract import APPS_KEY, CACHE_READY_KEY


def write(redis, name, entry):
    redis.hset(APPS_KEY, name, signing.dumps(dict(entry, name=name), signer=signing.SUPERVISOR))


def remove(redis, name):
    redis.hdel(APPS_KEY, name)


def replace_all(redis, entries):
    """Write ENTRIES (name -> entry) as the whole cache, then mark it complete, in one transaction."""
    pipe = redis.pipeline()
    pipe.delete(APPS_KEY)
    if entries:
        pipe.hset(APPS_KEY, mapping={name: signing.dumps(dict(entry, name=name), signer=signing.SUPERVISOR) for name, entry in entries.items()})
    pipe.set(CACHE_READY_KEY, "1")
    pipe.execute()


def size(redis):
    return redis.hlen(APPS_KEY)


def is_ready(redis):
    return bool(redis.exists(CACHE_READY_KEY))


def decode(raw, name=None):
    """A cache entry, or None when RAW is missing, not signed by the supervisor, malformed, or (NAME given) signed
    for another application (an entry copied to another field)."""
    entry = signing.loads_or_none(raw, signing.SUPERVISOR)
    if not isinstance(entry, dict) or not isinstance(entry.get("environments", []), list):
        return None
    if name is not None and entry.get("name") != name:
        return None
    return entry


def lookup(redis, name):
    """An application's cached configuration, or None when it is not known (or its entry does not verify)."""
    return decode(redis.hget(APPS_KEY, name), name)


def placed_on(redis, environment):
    """Names of the applications the cache places on ENVIRONMENT."""
    return sorted(
        name.decode()
        for name, raw in redis.hgetall(APPS_KEY).items()
        if environment in ((decode(raw, name.decode(errors="replace")) or {}).get("environments") or [])
    )
