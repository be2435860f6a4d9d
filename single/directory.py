"""APP_DISCOVERY_ADAPTER=local: a hosted application's view read from this process's own database, where the
single instance's lifecycle writes its state directly (single.runner), instead of from Redis."""

from apps.models import Application
from exchange.directory import AppView


class LocalDirectory:
    """exchange.directory.Directory's ``lookup``, answered from the database on every request: it is a query or
    two, in the process that changed it, so a stop answers 503 on the very next request with no cache to drop."""

    def lookup(self, name):
        application = Application.objects.with_placements().filter(name=name).first()
        if application is None:
            return None
        statuses = {
            # A placement never reported has no time: the hosting says "not started yet", as on a worker.
            p.environment.name: {"state": p.state, "error": p.error, "traceback": p.traceback,
                                 "at": p.state_at.timestamp()}
            for p in application.ordered_placements() if p.state_at is not None
        }
        return AppView(name=name, config=application.cache_entry(), statuses=statuses)

    def clear(self):
        pass  # nothing is kept
