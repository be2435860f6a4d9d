"""Write the configuration cache (exchange.cache) from the supervisor's database, the source of truth."""

from exchange import cache

from .models import Application


def publish(redis, application):
    cache.write(redis, application.name, application.cache_entry())


def unpublish(redis, name):
    cache.remove(redis, name)


def rebuild(redis):
    """Write every application's entry, then mark the cache complete. Returns how many."""
    entries = {app.name: app.cache_entry() for app in Application.objects.with_placements()}
    cache.replace_all(redis, entries)
    return len(entries)


def ensure(redis):
    """Rebuild the cache if Redis came back without it (restart, flush). Returns True when it rebuilt."""
    if cache.is_ready(redis):
        return False
    rebuild(redis)
    return True
