"""Mirror the environment registry (exchange.registry) into the supervisor's database."""

from datetime import datetime
from datetime import timezone as dt_timezone

from exchange import registry
from exchange.contract import NAME_RE
from supervisor_project import bulk

from .models import Environment

MIRRORED_FIELDS = (
    "url", "proxy_url", "version", "host", "pid", "last_heartbeat_at", "stopped_at", "web_ok", "problem", "refusal",
    "refusal_at", "rejected",
)


def _ts(value):
    return None if value is None else datetime.fromtimestamp(value, tz=dt_timezone.utc)


def sync(redis):
    """Mirror Redis registrations into the database: new environments are created, changed ones updated.

    Costs one HGETALL and one SELECT whatever the number of environments, plus one UPDATE for what changed
    (every heartbeat since the last call) and one INSERT for new environments.
    Raises redis.ConnectionError when Redis is unavailable; callers then show the last mirrored state.
    """
    entries, rejected = registry.read_all(redis)
    # Plain rows to compare against: most calls find nothing or a few heartbeats changed, and building a model
    # instance per environment would cost more than the rest of the page.
    mirrored = {row[0]: row[1:] for row in Environment.objects.values_list("name", "pk", *MIRRORED_FIELDS)}
    created, changed = [], []
    for name, entry in entries.items():
        if not NAME_RE.match(name):
            continue  # not a name an environment can have: never shown, never a proxy target
        values = {
            "url": entry["url"],
            "proxy_url": entry.get("proxy_url") or "",
            "version": str(entry.get("version") or ""),
            "host": str(entry.get("host") or ""),
            "pid": entry.get("pid"),
            "last_heartbeat_at": _ts(entry.get("heartbeat_at")),
            "stopped_at": _ts(entry.get("stopped_at")),
            "web_ok": entry.get("web_ok"),
            "problem": entry.get("problem") or "",
            "refusal": entry.get("refusal") or "",
            "refusal_at": _ts(entry.get("refusal_at")),
            "rejected": "",
        }
        row = mirrored.get(name)
        if row is None:
            created.append(Environment(name=name, **values))
        elif row[1:] != tuple(values[field] for field in MIRRORED_FIELDS):
            changed.append(Environment(pk=row[0], name=name, **values))
    # An entry that does not verify changes nothing of what was mirrored, but is shown: someone without the shared
    # secret wrote it (or a worker configured with another secret).
    for name, reason in rejected.items():
        if not NAME_RE.match(name):
            continue
        row = mirrored.get(name)
        if row is None:
            created.append(Environment(name=name, url="", rejected=reason))
        elif row[-1] != reason:
            kept = dict(zip(MIRRORED_FIELDS, row[1:]), rejected=reason)
            changed.append(Environment(pk=row[0], name=name, **kept))
    if created:
        Environment.objects.bulk_create(created, ignore_conflicts=True)
    bulk.update(changed, MIRRORED_FIELDS)
    return len(created), len(changed)
