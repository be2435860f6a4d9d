"""Bring what the supervisor shows up to date with Redis, and keep working when Redis is away.

Admin pages and API reads call ``refresh`` first. With Redis unavailable they still answer from the database
mirror and show the returned warning, instead of failing.
"""

import logging

import redis

from environments import registry
from supervisor_project.redis_client import supervisor_redis

from . import cache, status

log = logging.getLogger("appsup.supervisor")

REDIS_DOWN = "Redis is unavailable ({error}): showing the last known state; starting and stopping will fail until it is back."


def refresh(placements=()):
    """Mirror environment registrations, rebuild the configuration cache if Redis lost it, and refresh the
    runtime state of PLACEMENTS (each with application and environment loaded). Returns a warning or None."""
    try:
        r = supervisor_redis()
        registry.sync(r)
        if cache.ensure(r):
            log.warning("configuration cache was missing from Redis; rebuilt it from the database")
        status.refresh(r, placements)
    except redis.RedisError as exc:
        log.warning("Redis unavailable: %s", exc)
        return REDIS_DOWN.format(error=exc)
    return None
