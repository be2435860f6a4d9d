from django.db import DatabaseError
from django.http import HttpResponse
from django.views.decorators.cache import never_cache

from api.auth import api_view, error

from . import exposition
from .metrics import environment_series, registry


@never_cache
@api_view("GET", "HEAD", permission=("apps.view_application", "environments.view_environment"))
def metrics(request):
    """Prometheus's scrape (docs/architecture.md, "Operations endpoints"): the API token or a staff session, like
    the JSON API; anonymous scrapes get its 401, never the data. What it counts is what the Applications and
    Environments lists show, so a session needs both view permissions."""
    try:
        body, content_type = exposition.scrape(registry, environment_series(), request.headers.get("Accept", ""))
    except DatabaseError as exc:
        return error(f"metrics unavailable: the database does not answer ({' '.join(str(exc).split())})", 503)
    return HttpResponse(body, content_type=content_type)
