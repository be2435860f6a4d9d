"""APP_PROCESS_ADAPTER=local: a single instance runs each lifecycle step itself, in this process.

The same steps as a worker's (workers.commands): provision the application's database, migrate it, create its
initial superuser; stop = disconnect. Each transition is written where a single instance reads it: the placement's
row (what pages, the API and the hosting read) and the worker-side HostedState. No Redis, no command channel: the
lifecycle lock is a lock of this process, the only one that runs these steps.
"""

import contextlib
import logging
import threading
import time
import traceback
from datetime import datetime
from datetime import timezone as dt_timezone

from apps.lifecycle import OperationInProgress
from exchange import contract
from workers import commands, provisioning

log = logging.getLogger("appsup.single")


class LocalRunner:
    """apps.lifecycle's runner for a single instance (see apps.lifecycle.RedisRunner for the remote one)."""

    def __init__(self):
        self._locks = {}
        self._guard = threading.Lock()

    @contextlib.contextmanager
    def held(self, app, wait):
        with self._guard:
            lock = self._locks.setdefault(app, threading.Lock())
        if not (lock.acquire(timeout=wait) if wait > 0 else lock.acquire(blocking=False)):
            raise OperationInProgress(app)
        try:
            yield lambda: None  # nothing expires: the lock goes with the process
        finally:
            lock.release()

    # Nothing to mirror, cache, announce or forget: the database is the only place anything is kept.
    def sync_environments(self):
        pass

    def publish(self, application):
        pass

    def refresh(self, placements):
        pass

    def announce(self, app):
        pass

    def forget(self, app, environments):
        pass

    def execute(self, placement, command, payload, deadline, clock, renew):
        """The step's outcome in a worker's shape, {"app", "environment", "state", "error"}. It runs to its end: the
        deadline cannot cut short a migration in this very process."""
        handler = {contract.START: self._start, contract.STOP: self._stop, contract.RESTART: self._restart,
                   contract.REMOVE: self._remove, contract.PING: self._ping}[command]
        return handler(placement, payload or {})

    def _report(self, placement, state, error="", tb=""):
        at = time.time()
        placement.state, placement.error, placement.traceback = state, error, tb
        placement.state_at = datetime.fromtimestamp(at, tz=dt_timezone.utc)
        placement.save(update_fields=["state", "error", "traceback", "state_at"])
        app = placement.application.name
        commands.remember(app, {"state": state, "error": error, "traceback": tb, "at": at})
        return {"app": app, "environment": placement.environment.name, "state": state, "error": error}

    def _start(self, placement, payload):
        app = placement.application.name
        self._report(placement, contract.STARTING)
        try:
            provisioning.create_database(app)
            provisioning.migrate(app)
            provisioning.ensure_superuser(app, payload.get("admin_username"), payload.get("admin_password_hash"))
        except Exception as exc:
            log.exception("%s failed to start", app)
            return self._report(placement, contract.ERROR, f"{type(exc).__name__}: {exc}", traceback.format_exc())
        return self._report(placement, contract.RUNNING)

    def _stop(self, placement, payload):
        self._report(placement, contract.STOPPING)
        provisioning.disconnect(placement.application.name)
        return self._report(placement, contract.STOPPED)

    def _restart(self, placement, payload):
        self._stop(placement, payload)
        return self._start(placement, payload)

    def _remove(self, placement, payload):
        app = placement.application.name
        self._stop(placement, payload)
        dropped = False
        if payload.get("drop_database"):
            try:
                dropped = provisioning.drop_database(app)
            except Exception as exc:
                log.exception("%s: its database could not be dropped", app)
                return self._report(placement, contract.ERROR, f"{type(exc).__name__}: {exc}", traceback.format_exc())
        commands.forget(app)
        return {"app": app, "environment": placement.environment.name, "state": "removed", "error": "",
                "database_dropped": dropped}

    def _ping(self, placement, payload):
        return {"environment": placement.environment.name, "state": "pong", "error": "", "at": time.time()}
