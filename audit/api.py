"""JSON API: the audit log (docs/architecture.md, "Audit log"). Authentication and envelope:
api.auth.

``GET /api/audit/`` (permission ``audit.view_entry``) answers ``{"entries": [ENTRY, …], "next": URL or null}``,
newest first, ENTRY = ``{"id", "at", "actor_kind", "actor", "action", "target", "parameters", "outcome", "status",
"detail", "request_id", "address"}``. Filters, all optional, combined: ``?actor=`` (part of the actor, any case),
``?actor_kind=``, ``?action=`` (exact, or a prefix ending in ``.``: ``application.``), ``?target=`` (exact),
``?outcome=`` (ok, refused, failed), ``?request_id=``, ``?since=`` and ``?until=`` (ISO 8601; a date alone is
midnight UTC; since inclusive, until exclusive). Paged as every list of the API: ``?limit=`` (1..1000, default
500), ``?after=<id>`` the last id of the previous page. 400 naming the parameter for a bad value.
"""

from datetime import datetime, time
from datetime import timezone as dt_timezone

from django.utils.dateparse import parse_date, parse_datetime

from api.auth import api_view, error, page_request, paged

from . import actions
from .models import Entry

VIEW_PERMISSION = "audit.view_entry"


def moment(raw):
    """An aware datetime from ISO 8601 text (a date alone: its midnight UTC), or None."""
    try:
        value = parse_datetime(raw)
        if value is None and parse_date(raw) is not None:
            value = datetime.combine(parse_date(raw), time.min)
    except ValueError:
        return None
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=dt_timezone.utc)
    return value


def filtered(query):
    """(queryset, None) filtered by QUERY, or (None, the 400 answer)."""
    entries = Entry.objects.all()
    outcome = query.get("outcome")
    if outcome is not None and outcome not in actions.OUTCOMES:
        return None, error(f"outcome={outcome!r} is not valid: give one of {', '.join(actions.OUTCOMES)}", 400)
    kind = query.get("actor_kind")
    if kind is not None and kind not in actions.ACTOR_KINDS:
        return None, error(f"actor_kind={kind!r} is not valid: give one of {', '.join(actions.ACTOR_KINDS)}", 400)
    for name, lookup in (("since", "at__gte"), ("until", "at__lt")):
        raw = query.get(name)
        if raw is None:
            continue
        value = moment(raw)
        if value is None:
            return None, error(f"{name}={raw!r} is not valid: give an ISO 8601 date or time, e.g. "
                               "2026-01-31 or 2026-01-31T12:00:00Z", 400)
        entries = entries.filter(**{lookup: value})
    action = query.get("action")
    if action:
        entries = entries.filter(action__startswith=action) if action.endswith(".") else entries.filter(action=action)
    for name, lookup in (("actor", "actor__icontains"), ("target", "target"), ("request_id", "request_id")):
        if query.get(name):
            entries = entries.filter(**{lookup: query[name]})
    if kind:
        entries = entries.filter(actor_kind=kind)
    if outcome:
        entries = entries.filter(outcome=outcome)
    return entries, None


@api_view("GET", permission=VIEW_PERMISSION)
def audit_list(request):
    page, bad = page_request(request)
    if bad is not None:
        return bad
    if page.after is not None and not page.after.isdigit():
        return error(f"after={page.after!r} is not valid: give the id of the last entry of the previous page", 400)
    entries, bad = filtered(request.GET)
    if bad is not None:
        return bad
    if page.after is not None:
        entries = entries.filter(pk__lt=int(page.after))
    rows = [entry.as_json() for entry in entries.order_by("-pk")[: page.limit + 1]]
    return paged(request, page, "entries", rows, name=lambda item: str(item["id"]))
