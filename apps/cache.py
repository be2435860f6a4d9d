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
