"""django-rq's dashboard, registered in the admin by django-rq (``Django RQ › Dashboard``), with its pages guarded:
a job hash that cannot be read answers 422 naming it, and a command Redis that does not answer 503, instead of a
500 with a traceback."""

import functools
import logging

import redis
from django.conf import settings
from django.contrib import admin
from django.template.response import TemplateResponse
from django_rq import admin as rq_admin  # registers the dashboard, so that it can be registered again here
from django_rq.models import Dashboard

from .dashboard import UNREADABLE

log = logging.getLogger("appsup.dashboard")

UNREADABLE_MESSAGE = (
    "A job this page shows cannot be read from Redis: {error}. It was not written by this supervisor (forged or "
    "corrupted); the environment's agent drops such a job when it gets to it. Nothing was changed."
)
REDIS_DOWN_MESSAGE = "The command channel's Redis does not answer ({error}); try again shortly."


def _page(request, status, title, message):
    context = {**admin.site.each_context(request), "title": title, "message": message}
    return TemplateResponse(request, "monitoring/dashboard_refusal.html", context, status=status)


def guarded(view):
    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            response = view(request, *args, **kwargs)
            if hasattr(response, "render") and not response.is_rendered:
                response.render()  # errors in the template, reading a job's fields, are caught here too
            return response
        except redis.RedisError as exc:
            log.warning("dashboard %s: Redis does not answer: %s", request.path, exc)
            return _page(request, 503, "Redis unavailable", REDIS_DOWN_MESSAGE.format(error=exc))
        except UNREADABLE as exc:
            log.warning("dashboard %s: unreadable job hash", request.path, exc_info=True)
            return _page(request, 422, "Unreadable job", UNREADABLE_MESSAGE.format(error=f"{type(exc).__name__}: {exc}"))

    return wrapper


class DashboardAdmin(rq_admin.QueueAdmin):
    def get_urls(self):
        patterns = super().get_urls()
        for pattern in patterns:
            pattern.callback = guarded(pattern.callback)
        return patterns


admin.site.unregister(Dashboard)
if settings.APP_MODE:  # a single instance runs commands in its own process: it has no queues to show
    admin.site.register(Dashboard, DashboardAdmin)
