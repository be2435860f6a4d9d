"""JSON API: the environments (docs/architecture.md, "JSON API"). Authentication and envelope:
api.auth.

``GET /api/environments/`` answers ``{"environments": [ENV, …], "next": URL or null}`` with ENV = ``{"name",
"url", "proxy_url", "version", "status": "online"|"degraded"|"offline", "problem": why it is not online (or null),
"last_heartbeat_at": ISO 8601 or null}``: at most ``?limit=`` of them (1..1000, default 500) ordered by name,
those after ``?after=<name>``; ``next`` is the URL of the following page (400 for a bad limit or cursor).
``proxy_url`` is the address the supervisor proxies to (the URL itself when the worker set none); ``version`` is
null when unknown. With Redis unavailable it answers from the database mirror, 200 with an
``X-Supervisor-Warning`` header.

``DELETE /api/environments/<name>`` forgets an environment that will never answer (environments.retire): 204 once
it, its placements and its registration are gone. 409 ``{"error", "environment", "applications"}`` while it is
online (whatever ``force``), or while it hosts applications and ``?force=true`` is not given: the message says what
forcing does and names the applications; 404 for an unknown name; 400 for a ``force`` that is not true/false; 503
when Redis is unavailable (nothing is deleted).
"""

import redis
from django.http import HttpResponse
from django.utils import timezone

from api.auth import api_view, error, iso, page_request, paged, with_warning
from apps import refresh
from apps.api import flag
from exchange.contract import NAME_RE

from . import retire
from .models import Environment


def environment_dict(environment, now=None):
    return {
        "name": environment.name,
        "url": environment.url,
        "proxy_url": environment.target_url,
        "version": environment.version or None,
        "status": environment.status(now),
        "problem": environment.status_reason(now) or None,
        "last_heartbeat_at": iso(environment.last_heartbeat_at),
        **drain_fields(environment, now),
    }


def drain_fields(environment, now=None):
    """A drained or draining environment's ``status`` says so (its liveness then in ``liveness``), with ``drain``
    and what its drain could not move (``drain_left``: application → why); nothing more while in service."""
    state = environment.drain_state
    if state is None:
        return {}
    return {"status": state, "liveness": environment.status(now), "drain": state,
            "drain_left": environment.drain_left}


@api_view("GET", permission="environments.view_environment")
def environment_list(request):
    page, bad = page_request(request)
    if bad is not None:
        return bad
    now = timezone.now()
    environments = [environment_dict(env, now) for env in page.rows(Environment.objects.select_related("drain"))]
    return with_warning(paged(request, page, "environments", environments), refresh.staleness_warning(now))


def named(name):
    """The environment called NAME, or None (a string that cannot be a name is none)."""
    return Environment.objects.filter(name=name).first() if NAME_RE.fullmatch(name) else None


@api_view("DELETE", permission="environments.delete_environment")
def environment_detail(request, name):
    force, bad = flag(request, "force")
    if bad is not None:
        return bad
    environment = named(name)
    if environment is None:
        return error(f"no environment named {name!r}", 404, environment=None)
    try:
        retire.forget(environment, force=force)
    except Environment.DoesNotExist:  # deleted meanwhile
        return error(f"no environment named {name!r}", 404, environment=None)
    except retire.Refused as refusal:
        return error(str(refusal), 409, environment=name, applications=refusal.applications)
    except redis.RedisError as exc:
        return error(f"Redis is unavailable ({exc}); nothing was deleted", 503, environment=name)
    return HttpResponse(status=204)
