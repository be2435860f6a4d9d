from django.db import DatabaseError
from django.http import HttpResponse
from django.views.decorators.cache import never_cache
from prometheus_client.exposition import choose_encoder

from supervisor_project.api_auth import api_view, error

from .metrics import registry


@never_cache
@api_view("GET", "HEAD")
def metrics(request):
    """Prometheus's scrape (docs/architecture.md, "Operations endpoints"): the API token or a staff session, like
    the JSON API; anonymous scrapes get its 401, never the data."""
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    try:
        body = encode(registry)
    except DatabaseError as exc:
        return error(f"metrics unavailable: the database does not answer ({' '.join(str(exc).split())})", 503)
    return HttpResponse(body, content_type=content_type)
