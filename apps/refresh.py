"""How fresh what the supervisor shows is, and bringing it up to date before a write.

Pages and API reads only read the database, which the controller (runsupervisor) keeps mirrored from Redis; they
say so when that mirror may be out of date (``staleness_warning``). Writes that validate against the workers'
registrations (creating an application) first mirror them (``refresh``), tolerating Redis being away.
"""

import logging
from datetime import timedelta

import redis
from django.utils import timezone

from controller.models import ControllerState
from environments import mirror as registry_mirror
from environments.models import single_environment
from exchange.redis_client import supervisor_redis

log = logging.getLogger("appsup.supervisor")

REDIS_DOWN = (
    "Redis is unavailable ({error}): showing the last known state; "
    "starting and stopping will fail until it is back."
)
# A controller passes every half second; past this, what pages show is no longer being kept up to date.
CONTROLLER_SILENT_AFTER = timedelta(seconds=15)
NO_CONTROLLER = (
    "No supervisor controller has run {since}: states shown may be out of date and nothing converges by itself. "
    "Start one with `python manage.py runsupervisor`."
)


def refresh():
    """Mirror environment registrations now. Returns a warning, or None."""
    if single_environment():  # a single instance's one environment is itself: nothing registers through Redis
        return None
    try:
        registry_mirror.sync(supervisor_redis())
    except redis.RedisError as exc:
        log.warning("Redis unavailable: %s", exc)
        return REDIS_DOWN.format(error=exc)
    return None


def staleness_warning(now=None):
    """Why what the database shows may be stale (Redis down, no controller running), or None. One query."""
    if single_environment():  # a single instance has no controller: it converges itself (single/)
        return None
    now = now or timezone.now()
    state = ControllerState.objects.filter(pk=1).first()
    if state is None or state.seen_at is None:
        return NO_CONTROLLER.format(since="yet")
    if now - state.seen_at > CONTROLLER_SILENT_AFTER:
        return NO_CONTROLLER.format(since=f"for {int((now - state.seen_at).total_seconds())} s")
    if state.redis_error:
        return REDIS_DOWN.format(error=state.redis_error)
    return None
