"""Pending migrations, as the agents report them (contract.MIGRATIONS_KEY, workers.upgrade), mirrored into
PendingMigrations by the controller so that pages and the API read the database only (docs/architecture.md,
"Fleet upgrades").

An entry that does not verify, or whose fields do not match where it is stored, is skipped (anyone who can write
to Redis can write there); one gone from Redis is forgotten, unless Redis lost everything (then the last known
reports stay until the agents report again).
"""

import datetime
import json

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from exchange import contract, signing
from exchange.contract import NAME_RE

from .models import PendingMigrations

MAX_NAMES = 10_000


def decode(field, raw):
    try:
        signer, body = signing.open_sealed(raw)
        entry = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError, ImproperlyConfigured):
        return None
    if not isinstance(entry, dict) or entry.get("environment") != signer:
        return None  # only the environment itself says what its applications lack
    app, environment = entry.get("app"), entry.get("environment")
    if not (isinstance(app, str) and isinstance(environment, str) and NAME_RE.fullmatch(app)
            and NAME_RE.fullmatch(environment) and contract.status_field(app, environment) == field):
        return None
    pending = entry.get("pending")
    if not isinstance(pending, list) or len(pending) > MAX_NAMES or not all(
            isinstance(name, str) and len(name) < 300 for name in pending):
        return None
    at = entry.get("at")
    return {"app": app, "environment": environment, "pending": pending,
            "version": str(entry.get("version") or "")[:50],
            "at": datetime.datetime.fromtimestamp(at, tz=datetime.UTC) if isinstance(at, (int, float)) else None}


def mirror(redis):
    """Copy every report into the database; returns the names of the applications whose pending list changed."""
    raw = redis.hgetall(contract.MIGRATIONS_KEY)
    reports = {}
    for field, value in raw.items():
        field = field.decode() if isinstance(field, bytes) else field
        entry = decode(field, value)
        if entry is not None:
            reports[(entry["app"], entry["environment"])] = entry
    known = {(row.app, row.environment): row for row in PendingMigrations.objects.all()}
    changed = set()
    with transaction.atomic():
        for key, entry in reports.items():
            row = known.get(key)
            if row is not None and row.migrations == entry["pending"] and row.version == entry["version"]:
                continue
            PendingMigrations.objects.update_or_create(
                app=key[0], environment=key[1],
                defaults={"migrations": entry["pending"], "count": len(entry["pending"]), "version": entry["version"],
                          "reported_at": entry["at"]})
            changed.add(key[0])
        if raw or not known:  # an empty hash after a loss of Redis: keep what was known
            gone = [row.pk for key, row in known.items() if key not in reports]
            if gone:
                changed.update(row.app for key, row in known.items() if key not in reports)
                PendingMigrations.objects.filter(pk__in=gone).delete()
    return changed


def for_app(application):
    """``{environment: [migrations]}`` for each environment the application is placed on that reported it."""
    names = application.environment_names()
    rows = PendingMigrations.objects.filter(app=application.name, environment__in=names)
    found = {row.environment: row.migrations for row in rows}
    return {name: found[name] for name in names if name in found}


def needing_upgrade(apps=None):
    """``[(app, environment, migrations, version)]`` of the placements that report pending migrations, among APPS
    (names; None: all), ordered."""
    from apps.models import Placement

    rows = PendingMigrations.objects.filter(count__gt=0).order_by("app", "environment")
    if apps is not None:
        rows = rows.filter(app__in=apps)
    rows = list(rows)
    # Only the placements of the applications reporting something: not every placement of a large fleet.
    placed = set(Placement.objects.filter(application__name__in={row.app for row in rows})
                 .values_list("application__name", "environment__name"))
    return [(row.app, row.environment, row.migrations, row.version) for row in rows
            if (row.app, row.environment) in placed]
