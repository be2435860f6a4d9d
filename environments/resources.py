"""CPU and memory of each environment's agent and web process on the Environments pages, as the agents last
reported them with their heartbeats (exchange.usage). Only reads; a report that does not verify, is malformed or
is older than the heartbeat timeout shows as unknown."""

import redis
from django.conf import settings
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from exchange import usage
from exchange.redis_client import supervisor_redis


def attach(environments):
    """Give each of ENVIRONMENTS its ``usage_report`` (None: unknown), in one Redis read."""
    environments = list(environments)
    try:
        found = usage.read(supervisor_redis(), [e.name for e in environments], settings.APP_HEARTBEAT_TIMEOUT)
    except redis.RedisError:
        found = {}
    for environment in environments:
        environment.usage_report = found.get(environment.name)


def html(report):
    if report is None:
        return mark_safe('<span class="appsup-muted">unknown</span>')
    return format_html('<span class="appsup-usage">web: {}</span><br><span class="appsup-usage">agent: {}</span>',
                       usage.text(report["web"]), usage.text(report["agent"]))
