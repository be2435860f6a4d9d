"""Bring what the supervisor shows up to date with Redis, and keep working when Redis is away.

Admin pages and API reads call ``refresh()`` before loading rows (environment registrations, configuration
cache) and ``refresh_statuses(placements)`` on the placements they show. With Redis unavailable both return a
warning and the caller answers from the database mirror, instead of failing.
"""

import logging

import redis

from environments import mirror as registry_mirror
from exchange import status
from exchange.redis_client import supervisor_redis

from . import cache
from . import mirror as status_mirror

log = logging.getLogger("appsup.supervisor")

REDIS_DOWN = (
    "Redis is unavailable ({error}): showing the last known state; "
    "starting and stopping will fail until it is back."
)


def _tolerating_outage(work):
    """(what WORK(redis) returned, None), or (None, a warning) when Redis is unavailable."""
    try:
        return work(supervisor_redis()), None
    except redis.RedisError as exc:
        log.warning("Redis unavailable: %s", exc)
        return None, REDIS_DOWN.format(error=exc)


def refresh():
    """Mirror environment registrations; rebuild the configuration cache if Redis lost it. Returns a warning
    or None."""

    def work(r):
        registry_mirror.sync(r)
        if cache.ensure(r):
            log.warning("the configuration cache was missing from Redis; rebuilt it from the database")

    return _tolerating_outage(work)[1]


def refresh_statuses(placements):
    """Update PLACEMENTS (application and environment loaded) from the statuses workers reported, in one round
    trip. Returns a warning or None."""
    return _tolerating_outage(lambda r: status_mirror.refresh(r, placements))[1]


def reported_statuses(fields):
    """(the entries workers reported for FIELDS, see status.fetch; a warning or None). With Redis unavailable
    every entry is None, so callers show the database mirror."""
    entries, warning = _tolerating_outage(lambda r: status.fetch(r, fields))
    return (entries if entries is not None else [None] * len(fields)), warning
