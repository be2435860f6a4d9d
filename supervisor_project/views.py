import logging

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import cache_control, never_cache
from django.views.decorators.http import require_safe

from exchange import usage
from exchange.contract import VERSION
from monitoring import readiness

log = logging.getLogger("appsup.readiness")


def liveness():
    """What /healthz answers: the process's role, environment and version; a worker's also its CPU and memory
    (exchange.usage), which its agent reports with its heartbeats."""
    found = {"status": "ok", "role": settings.APP_MODE or "single", "environment": settings.ENVIRONMENT_NAME or None,
             "version": VERSION}
    if settings.APP_MODE == "worker":
        found["usage"] = usage.measure()
    return found


@require_safe
def healthz(request):
    """Liveness of a web process (container health checks). Under a web server the event loop answers it first
    (supervisor_project.asgi.answering_liveness); this view serves Django's test client and WSGI."""
    return JsonResponse(liveness())


@never_cache
@require_safe
def readyz(request):
    """Readiness of a web process (load balancers, Kubernetes): 200 when its database and Redis answer, else 503
    with ``{"status": "unavailable", "error", "down": [...]}`` naming what does not ("database", "redis")."""
    problems = readiness.problems()
    if problems:
        # Probes are anonymous: the answer names what is down, the log says why (addresses included).
        for what, why in problems.items():
            log.warning("not ready: %s does not answer: %s", what, why)
        message = "not ready: " + ", ".join(problems) + " not answering"
        return JsonResponse({"status": "unavailable", "error": message, "down": list(problems)}, status=503)
    return JsonResponse({"status": "ok"})


@cache_control(max_age=86400, public=True)
@require_safe
def favicon(request):
    """Browsers ask every site for /favicon.ico: answer that there is none, instead of a 404 warning in the log."""
    return HttpResponse(status=204)
