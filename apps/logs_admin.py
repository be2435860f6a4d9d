"""The admin's Logs page of an application (Applications → <name> → Logs): its last requests and errors, as
apps.logs reads them, with filters in the query string (the API's: status class, errors only, path contains,
environment) and a live tail (apps/logs.js: on a "log" event of the application over /ws/events/, it reads the API
again).
"""

import redis
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import reverse

from exchange.applog import STATUS_CLASSES

from . import logs

FILTERS = ("status", "errors", "path", "environment")


def logs_view(model_admin, request, object_id):
    application = model_admin.get_object(request, object_id)
    if application is None:
        return model_admin._get_obj_does_not_exist_redirect(request, model_admin.opts, object_id)
    if not model_admin.has_view_or_change_permission(request, application):
        raise PermissionDenied
    # A form leaves its empty fields in the query: they filter nothing here.
    query = {key: request.GET[key] for key in (*FILTERS, "limit") if request.GET.get(key)}
    filters, limit, problems = logs.filters_from(query)
    entries, skipped, problem = [], 0, None
    if problems:
        problem = "; ".join(f"{key}: {message}" for key, message in problems.items())
    else:
        try:
            entries, skipped = logs.read(application.name, filters, limit)
        except redis.RedisError as exc:
            problem = f"Redis is unavailable ({exc}): the logs live there."
    for record in entries:
        record["when"] = logs.iso(record["at"])
    context = {
        **model_admin.admin_site.each_context(request),
        "title": f"Logs of {application.name}",
        "subtitle": None,
        "opts": model_admin.opts,
        "original": application,
        "media": model_admin.media,
        "entries": entries,
        "skipped": skipped,
        "problem": problem,
        "query": query,
        "errors_only": filters.errors,
        "status_classes": STATUS_CLASSES,
        "environments": [p.environment.name for p in application.ordered_placements()],
        "api_url": reverse("api:app-logs", args=[application.name]),
        "keep": logs.KEEP,
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, "admin/apps/application/logs.html", context)
