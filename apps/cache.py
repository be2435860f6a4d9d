"""Write the configuration cache (exchange.cache) from the supervisor's database, the source of truth, and announce
each change (exchange.events) so that every process drops its cached view at once."""

from exchange import cache, events

from .models import Application, Removal


def publish(redis, application):
    leaving = Removal.objects.filter(application=application).values_list("environment__name", flat=True)
    cache.write(redis, application.name, application.cache_entry(leaving=sorted(leaving)))
    events.publish(redis, events.APP, name=application.name)


def unpublish(redis, name):
    cache.remove(redis, name)
    events.publish(redis, events.APP, name=name)


def rebuild(redis):
    """Write every application's entry, then mark the cache complete. Returns how many."""
    leaving = {}
    for app, environment in Removal.objects.order_by("environment__name").values_list(
            "application__name", "environment__name"):
        leaving.setdefault(app, []).append(environment)
    entries = {app.name: app.cache_entry(leaving=leaving.get(app.name, ()))
               for app in Application.objects.with_placements()}
    cache.replace_all(redis, entries)
    events.publish(redis, events.CACHE, action="rebuilt")
    return len(entries)


def ensure(redis):
    """Rebuild the cache if Redis lost it (restart, flush) or part of it. Returns True when it rebuilt."""
    if cache.is_ready(redis) and cache.size(redis) == Application.objects.count():
        return False
    rebuild(redis)
    return True


class Verified:
    """The cache entries found equal to the database, by their bytes, between calls of ``repair``: an unchanged
    entry is neither verified nor compared again."""

    def __init__(self):
        self.raw = {}


def repair(redis, verified=None):
    """Rewrite every entry of the cache that differs from the database: one that does not verify as the
    supervisor's (forged, altered, signed with an environment's key), or verifies but says something else (an
    old one copied back). Entries of applications the database does not have are removed. Returns the names it
    repaired."""
    verified = verified if verified is not None else Verified()
    stored = {name.decode(errors="replace"): raw for name, raw in redis.hgetall(cache.APPS_KEY).items()}
    changed = [name for name, raw in stored.items() if verified.raw.get(name) != raw]
    if not changed:
        verified.raw = {name: raw for name, raw in verified.raw.items() if name in stored}
        return []
    leaving = {}
    for app, environment in Removal.objects.filter(application__name__in=changed).order_by(
            "environment__name").values_list("application__name", "environment__name"):
        leaving.setdefault(app, []).append(environment)
    wanted = {app.name: dict(app.cache_entry(leaving=leaving.get(app.name, ())), name=app.name)
              for app in Application.objects.with_placements().filter(name__in=changed)}
    repaired = []
    for name in changed:
        entry = cache.decode(stored[name], name)
        if name in wanted and entry is not None and _same(entry, wanted[name]):
            verified.raw[name] = stored[name]
            continue
        repaired.append(name)
        if name in wanted:
            cache.write(redis, name, wanted[name])
        else:
            cache.remove(redis, name)
        events.publish(redis, events.APP, name=name)
        verified.raw.pop(name, None)
    return repaired


def _same(entry, wanted):
    import json

    # Compared as JSON would carry them: tuples and lists alike.
    return json.loads(json.dumps(entry)) == json.loads(json.dumps(wanted))
