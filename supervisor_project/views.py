from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.http import require_safe

from exchange.contract import VERSION


@require_safe
def healthz(request):
    """Liveness of a web process (container health checks): its role, environment and version."""
    return JsonResponse(
        {"status": "ok", "role": settings.APP_MODE or "single", "environment": settings.ENVIRONMENT_NAME or None,
         "version": VERSION}
    )
