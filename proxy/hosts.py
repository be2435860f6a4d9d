"""Which origin a request of the supervisor's web addresses (APP_APPS_DOMAIN, APP_SUPERVISOR_HOSTS).

Without APP_APPS_DOMAIN there is one origin: the supervisor's pages, and every application under /apps/<name>/.
With it, each application has its own origin, ``<name>.<APP_APPS_DOMAIN>``, so its scripts can read neither the
supervisor's pages nor another application's; the supervisor's admin, API and /ws/events/ answer only on
APP_SUPERVISOR_HOSTS, where /apps/<name>/ leads to the application's own origin.
"""

import asyncio
import logging
import time

from django.conf import settings
from django.db import DatabaseError, connection

from . import headers as h

SUPERVISOR = "supervisor"
APPLICATION = "application"
ELSEWHERE = "elsewhere"
# Answered on any host: orchestrators probe with whatever host they address the process by.
ANY_HOST_PATHS = ("/healthz", "/readyz")

logger = logging.getLogger("appsup.proxy")


def host_name(scope):
    """The request's host name, lower-cased, without its port ("" when it has none worth reading)."""
    host = h.client_host(scope)
    if not host:
        return ""
    text = host.decode("latin-1").lower()
    if text.startswith("["):
        return text.partition("]")[0] + "]"
    return text.rpartition(":")[0] if ":" in text else text


def addressed(scope):
    """(SUPERVISOR, ""), (APPLICATION, the application's name) or (ELSEWHERE, the host name: maybe a custom domain)."""
    if not settings.APP_APPS_DOMAIN:
        return SUPERVISOR, ""
    host = host_name(scope)
    if host in settings.APP_SUPERVISOR_HOSTS:
        return SUPERVISOR, ""
    suffix = "." + settings.APP_APPS_DOMAIN
    if host.endswith(suffix) and "." not in host[:-len(suffix)]:
        return APPLICATION, host[:-len(suffix)]
    return ELSEWHERE, host


class CustomDomains:
    """Custom domain -> application name (apps.models.Domain), read from the database at most once per TTL seconds,
    in a thread: the event loop never waits on the database. A domain added in the admin answers within TTL."""

    TTL = 1.0

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.mapping, self.read_at = {}, None
        self.lock = asyncio.Lock()

    @staticmethod
    def _read():
        from apps.models import Domain

        try:
            return dict(Domain.objects.values_list("name", "application__name"))
        finally:
            connection.close()  # a thread of asyncio's pool: no connection left behind in it

    async def application(self, host):
        if not host:
            return None
        async with self.lock:
            if self.read_at is None or self.clock() - self.read_at >= self.TTL:
                try:
                    self.mapping = await asyncio.to_thread(self._read)
                except DatabaseError as exc:  # keep the last known mapping
                    logger.warning("custom domains: cannot read them from the database: %s", exc)
                self.read_at = self.clock()
        return self.mapping.get(host)


custom_domains = CustomDomains()


def app_origin(name, scheme="https", port=None):
    """Application NAME's own origin (on PORT, as the supervisor's when it is not a default one), or "" without
    APP_APPS_DOMAIN."""
    if not settings.APP_APPS_DOMAIN:
        return ""
    default = {"http": "80", "https": "443"}.get(scheme)
    suffix = f":{port}" if port and str(port) != default else ""
    return f"{scheme}://{name}.{settings.APP_APPS_DOMAIN}{suffix}"
