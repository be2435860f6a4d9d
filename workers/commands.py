"""Lifecycle commands as a worker executes them. ``execute`` is the only function a command job may name.

Each command is idempotent and reports every transition to the status hash, so the supervisor (and anyone
reading Redis) sees starting/running, stopping/stopped, or error with its message and traceback.
"""

import logging
import time
import traceback

from exchange import contract, status
from exchange.channel import JOB_TIMEOUT
from exchange.redis_client import supervisor_redis

from . import provisioning

log = logging.getLogger("appsup.worker")


def _report(app, environment, state, error="", tb=""):
    status.write(supervisor_redis(), app, environment, state, error=error, traceback=tb)
    return {"app": app, "environment": environment, "state": state, "error": error}


def _failed(app, environment, exc):
    log.exception("%s on %s failed", app, environment)
    return _report(app, environment, contract.ERROR, error=f"{type(exc).__name__}: {exc}", tb=traceback.format_exc())


def start(app, environment, payload):
    _report(app, environment, contract.STARTING)
    try:
        # Starting writes to the application's database; two workers must never migrate it at once.
        lock = supervisor_redis().lock(
            contract.provision_lock_key(app), timeout=JOB_TIMEOUT, blocking_timeout=JOB_TIMEOUT
        )
        if not lock.acquire():
            raise TimeoutError(f"another environment kept {app}'s database locked for {JOB_TIMEOUT} s")
        try:
            provisioning.create_database(app)
            provisioning.migrate(app)
            provisioning.ensure_superuser(app, payload.get("admin_username"), payload.get("admin_password_hash"))
        finally:
            lock.release()
    except Exception as exc:
        return _failed(app, environment, exc)
    return _report(app, environment, contract.RUNNING)


def stop(app, environment, payload):
    _report(app, environment, contract.STOPPING)
    provisioning.disconnect(app)
    return _report(app, environment, contract.STOPPED)


def restart(app, environment, payload):
    stop(app, environment, payload)
    return start(app, environment, payload)


def remove(app, environment, payload):
    stop(app, environment, payload)
    dropped = False
    if payload.get("drop_database"):
        try:
            dropped = provisioning.drop_database(app)
        except Exception as exc:
            return _failed(app, environment, exc)
    status.forget(supervisor_redis(), app, [environment])
    return {"app": app, "environment": environment, "state": "removed", "error": "", "database_dropped": dropped}


def ping(app, environment, payload):
    return {"environment": environment, "state": "pong", "error": "", "at": time.time()}


HANDLERS = {
    contract.START: start,
    contract.STOP: stop,
    contract.RESTART: restart,
    contract.REMOVE: remove,
    contract.PING: ping,
}
assert set(HANDLERS) == set(contract.COMMANDS)


def execute(command, app, environment, payload, expires_at=None):
    # CommandWorker has already checked the command, the environment, the placement and the expiry.
    return HANDLERS[command](app, environment, payload or {})
