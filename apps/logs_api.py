"""JSON API: ``GET /api/apps/<name>/logs`` (docs/architecture.md, "JSON API"; docs/api.md).

200 ``{"app", "entries": [ENTRY, …], "skipped": n}``, newest first; ENTRY = ``{"method", "path", "status", "ms",
"environment", "at", "error": null or {"type", "message"[, "traceback"]}}`` (``path`` is the application's own,
without /apps/<name>; no query string). ``?errors=true`` reads the error list, with tracebacks; ``?status=5xx``,
``?path=`` (contains), ``?environment=`` filter; ``?limit=`` 1..500 (default 100). ``skipped`` counts stored entries
that do not verify or are malformed. 400 for a filter that cannot be, 404 for an unknown application, 503 when
Redis does not answer.
"""

import redis

from api.auth import api_view, error, json_response

from . import logs
from .api import _load, _unknown


@api_view("GET", "HEAD", permission="apps.view_application")
def app_logs(request, name):
    application = _load(name)
    if application is None:
        return _unknown(name)
    filters, limit, problems = logs.filters_from(request.GET)
    if problems:
        return error("; ".join(f"{key}: {message}" for key, message in problems.items()), 400, fields=problems)
    try:
        entries, skipped = logs.read(application.name, filters, limit)
    except redis.RedisError as exc:
        return error(f"Redis is unavailable ({exc}); the logs live there", 503)
    return json_response({"app": application.name, "entries": [logs.entry_dict(e) for e in entries],
                          "skipped": skipped})
