"""What a worker says about the code it hosts, and the upgrade command (docs/architecture.md, "Fleet upgrades").

- ``code_version``: the environment's version in its registration, ``<contract.VERSION>+<12 hex>``, the hex a
  SHA-256 of the hosted Django apps' code (every file of the packages listed in APP_HOSTED_APPS and of
  APP_HOSTED_URLCONF's package) and of the migrations every hosted application gets: new code, new version.
- ``pending``: the migrations of that code an application's database has not applied, in the order ``migrate``
  would apply them; ``report`` writes them to contract.MIGRATIONS_KEY (signed) for the supervisor to mirror.
- ``upgrade``: the command. Migrates under the application's provision lock, as a start does; a migration that
  fails leaves the application stopped here (not served) with the error, and the answer says so.
"""

import functools
import hashlib
import importlib.util
import logging
import time
from pathlib import Path

from django.conf import settings
from django.db import connections
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from redis.exceptions import RedisError

from exchange import contract, signing
from exchange.redis_client import supervisor_redis

from . import provisioning

log = logging.getLogger("appsup.worker")


def code_version():
    """The version this worker's code makes, computed once per process and hosted code (which changes only with a
    restart, or a test's settings)."""
    return _code_version(tuple(settings.APP_HOSTED_APPS), settings.APP_HOSTED_URLCONF or "")


@functools.lru_cache(maxsize=4)
def _code_version(hosted_apps, urlconf):
    digest = hashlib.sha256()
    for label, name in migration_order():
        digest.update(f"migration {label}.{name}\n".encode())
    modules = list(hosted_apps)
    if urlconf:
        modules.append(urlconf.rsplit(".", 1)[0] if "." in urlconf else urlconf)
    for root in sorted(set(filter(None, map(_package_dir, modules)))):
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                digest.update(f"file {path.relative_to(root.parent)}\n".encode())
                digest.update(path.read_bytes())
    return f"{contract.VERSION}+{digest.hexdigest()[:12]}"


def _package_dir(module):
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None and not spec.submodule_search_locations:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]).resolve()
    return Path(spec.origin).resolve().parent


def migration_order():
    """Every migration of the hosted apps on disk, as ``(label, name)``, in the order ``migrate`` applies them."""
    return _migration_order(tuple(settings.APP_HOSTED_APPS))


@functools.lru_cache(maxsize=4)
def _migration_order(hosted_apps):
    loader = MigrationLoader(None, ignore_no_migrations=True)
    labels = provisioning.hosted_labels()
    leaves = [node for node in loader.graph.leaf_nodes() if node[0] in labels]
    order = []
    for leaf in leaves:
        for node in loader.graph.forwards_plan(leaf):
            if node[0] in labels and node not in order:
                order.append(node)
    return tuple(order)


def pending(app):
    """``["<label>.<migration>", …]`` not applied in APP's database here, or None when it has no database here."""
    if not provisioning.database_exists(app):
        return None
    alias = provisioning.connect(app)
    recorder = MigrationRecorder(connections[alias])
    try:
        applied = set(recorder.applied_migrations()) if recorder.has_table() else set()
    finally:
        # The agent reports every application it holds at registration: one connection each left open would
        # exhaust a PostgreSQL server's connections with a few hundred applications.
        if not connections[alias].in_atomic_block:
            connections[alias].close()
    return [f"{label}.{name}" for label, name in migration_order() if (label, name) not in applied]


def report(app, environment, redis=None):
    """Write what APP's database lacks here to contract.MIGRATIONS_KEY (nothing when it has no database here: it is
    migrated when it first starts). Returns the list, or None."""
    redis = redis or supervisor_redis()
    field = contract.status_field(app, environment)
    try:
        missing = pending(app)
    except Exception as exc:  # a database that cannot be read: said, not hidden
        log.warning("%s: could not read its applied migrations (%s)", app, exc)
        return None
    entry = {"app": app, "environment": environment, "pending": missing, "version": code_version(), "at": time.time()}
    try:
        if missing is None:
            redis.hdel(contract.MIGRATIONS_KEY, field)
        else:
            redis.hset(contract.MIGRATIONS_KEY, field, signing.dumps(entry, signer=environment))
    except RedisError as exc:  # a report is for people; the command it follows has done its work
        log.warning("%s: could not report its pending migrations (%s)", app, exc)
    return missing


def forget(app, environment, redis=None):
    (redis or supervisor_redis()).hdel(contract.MIGRATIONS_KEY, contract.status_field(app, environment))


def upgrade(app, environment, payload, job_id=None):
    """The UPGRADE command: migrate APP's database to this worker's code. Answers ``{"state": "migrated",
    "applied": [...]}``, or ``{"state": "error", "error"}`` after stopping it here when a migration failed."""
    from . import commands  # the lifecycle's reporting and locks; commands dispatches here

    before = pending(app)
    if before is None:
        return {"app": app, "environment": environment, "state": contract.ERROR,
                "error": f"{app} has no database on {environment} (never started here): nothing to upgrade"}
    try:
        with commands.provision_lock(app, token=job_id):
            provisioning.migrate(app)
    except Exception as exc:
        log.exception("%s on %s: upgrade failed", app, environment)
        message = f"upgrade failed: {type(exc).__name__}: {exc}"
        backup = (payload or {}).get("backup")
        if backup:
            message += f" (the backup taken before it: backup {backup})"
        # Not served until an operator looks: a half-migrated database must not take requests.
        provisioning.disconnect(app)
        commands._report(app, environment, contract.STOPPED, error=message)
        report(app, environment)
        return {"app": app, "environment": environment, "state": contract.ERROR, "error": message}
    left = report(app, environment) or []
    applied = [name for name in before if name not in left]
    return {"app": app, "environment": environment, "state": contract.MIGRATED, "error": "", "applied": applied}


def report_all(environment, apps):
    """Report what each of APPS (those this worker holds a state for) lacks here; at the agent's (re)registration,
    so that a worker started with new code shows its pending migrations at once. Returns {app: pending}."""
    reported = {}
    redis = supervisor_redis()
    for app in apps:
        reported[app] = report(app, environment, redis)
    return reported
