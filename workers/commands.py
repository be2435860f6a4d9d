"""Lifecycle commands as a worker executes them. ``execute`` is the only function a command job may name.

Each command is idempotent and reports every transition to the status hash, so the supervisor (and anyone
reading Redis) sees starting/running, stopping/stopped, or error with its message and traceback.
"""

import contextlib
import logging
import threading
import time
import traceback

from django.db import DatabaseError
from redis.exceptions import LockError

from exchange import channel, contract, locks, status
from exchange.redis_client import command_redis, supervisor_redis

from . import appcommand, backups, provisioning, transfer, upgrade
from .models import HostedState

log = logging.getLogger("appsup.worker")

# The provision lock expires this long after its holder stops renewing it (a worker killed mid-start), so a
# crash freezes the application's starts for seconds, not for a whole JOB_TIMEOUT. Renewed every third of it.
PROVISION_LOCK_TTL = 15
# How long a start waits for another holder of the lock. The agent runs one command at a time: a start waiting out a
# dead holder's lock would hold up every other application's commands on this environment. Past this the start
# fails saying so, and the controller tries again (a holder on this environment that was killed is released at
# once by the restarted agent: release_provision_lock).
PROVISION_LOCK_WAIT = 3


def _report(app, environment, state, error="", tb=""):
    now = time.time()
    # This worker's own record first: its web serves by it (workers.own_state), and the status's event, which makes
    # every process read the application again, must find the record written.
    remember(app, {"state": state, "error": error, "traceback": tb, "at": now})
    status.write(supervisor_redis(), app, environment, state, error=error, traceback=tb, now=now)
    return {"app": app, "environment": environment, "state": state, "error": error}


def remember(app, entry):
    """Keep the reported ENTRY in this worker's own database: Redis may lose it, the agent publishes it again."""
    try:
        HostedState.objects.update_or_create(
            app=app,
            defaults={"state": entry["state"], "error": entry.get("error") or "",
                      "traceback": entry.get("traceback") or "", "at": entry["at"]},
        )
    except DatabaseError:  # the report in Redis stands; only a later republish would miss it
        log.exception("%s: could not record its state in this worker's database", app)


def forget(app):
    try:
        HostedState.objects.filter(app=app).delete()
    except DatabaseError:
        log.exception("%s: could not forget its state in this worker's database", app)


@contextlib.contextmanager
def provision_lock(app, ttl=None, wait=None, token=None):
    """Hold APP's provision lock across all workers, waiting up to WAIT seconds for another holder.

    The lock lives TTL seconds and a thread renews it while the block runs: if this process dies, the lock goes
    with it a few seconds later. TOKEN (the job's id) is what the lock holds, so the agent that comes back after
    this one was killed can tell its own dead start's lock and release it (thread_local=False: the renewing thread
    must see the token this one took.)
    """
    ttl = ttl or PROVISION_LOCK_TTL
    wait = PROVISION_LOCK_WAIT if wait is None else wait
    r = supervisor_redis()
    # Signed (exchange.locks): a value planted by someone without the secret is broken, not waited for.
    lock = locks.SignedLock(r, contract.provision_lock_key(app), contract.PROVISION_LOCK, timeout=ttl,
                            blocking_timeout=wait, thread_local=False)
    if not lock.acquire(token=token):
        left = r.ttl(contract.provision_lock_key(app))
        raise TimeoutError(
            f"another start holds {app}'s database lock (creating or migrating it){_for_up_to(left)}; "
            f"waited {wait:g} s and gave up so as not to hold up this environment's other commands: "
            "the controller tries again")
    done = threading.Event()

    def renew():
        while not done.wait(ttl / 3):
            try:
                lock.reacquire()
            except LockError as exc:  # expired or taken (Redis lost it): nothing to renew any more
                log.warning("%s: provision lock lost while held (%s)", app, exc)
                return
            except Exception as exc:  # Redis away for a moment: try again at the next turn
                log.warning("%s: could not renew the provision lock (%s)", app, exc)

    renewer = threading.Thread(target=renew, name=f"provision-lock-{app}", daemon=True)
    renewer.start()
    try:
        yield lock
    finally:
        done.set()
        renewer.join()
        try:
            lock.release()
        except LockError:  # it expired or Redis lost it; either way it is not held any more
            log.warning("%s: provision lock was already gone at release", app)


def _for_up_to(seconds):
    return f" for up to {seconds} s more" if isinstance(seconds, int) and seconds > 0 else ""


def release_provision_lock(app, job_id):
    """Release APP's provision lock if the job JOB_ID (a start this agent's previous process was running when it
    was killed) still holds it: nobody is migrating under it any more. Returns whether it did."""
    return locks.release_if_held_by(supervisor_redis(), contract.provision_lock_key(app), job_id)


def _failed(app, environment, exc):
    log.exception("%s on %s failed", app, environment)
    return _report(app, environment, contract.ERROR, error=f"{type(exc).__name__}: {exc}", tb=traceback.format_exc())


def start(app, environment, payload, job_id=None):
    _report(app, environment, contract.STARTING)
    try:
        # Starting writes to the application's database; two workers must never migrate it at once.
        with provision_lock(app, token=job_id):
            provisioning.create_database(app)
            provisioning.migrate(app)
            provisioning.ensure_superuser(app, payload.get("admin_username"), payload.get("admin_password_hash"))
    except Exception as exc:
        return _failed(app, environment, exc)
    return _report(app, environment, contract.RUNNING)


def stop(app, environment, payload, job_id=None):
    held = HostedState.objects.filter(app=app).values("state", "error", "traceback").first()
    if held and held["state"] == contract.STOPPED:
        # Already stopped here, maybe by a failed upgrade: a stop the controller sent before it saw that keeps the
        # reason, which the operator needs more than a clean "stopped".
        provisioning.disconnect(app)
        return _report(app, environment, contract.STOPPED, error=held["error"], tb=held["traceback"])
    _report(app, environment, contract.STOPPING)
    provisioning.disconnect(app)
    return _report(app, environment, contract.STOPPED)


def restart(app, environment, payload, job_id=None):
    stop(app, environment, payload)
    return start(app, environment, payload, job_id=job_id)


def remove(app, environment, payload, job_id=None):
    stop(app, environment, payload)
    dropped = False
    if payload.get("drop_database"):
        try:
            dropped = provisioning.drop_database(app)
        except Exception as exc:
            return _failed(app, environment, exc)
    status.forget(supervisor_redis(), app, [environment])
    forget(app)
    return {"app": app, "environment": environment, "state": "removed", "error": "", "database_dropped": dropped}


def ping(app, environment, payload, job_id=None):
    return {"environment": environment, "state": "pong", "error": "", "at": time.time()}


def dump(app, environment, payload, job_id=None):
    # The application keeps serving (reads; its writes are refused while it moves, workers.hosting): no state to report.
    sent = transfer.dump(app, payload.get("transfer"), command_redis())
    return dict(sent, app=app, environment=environment, state=contract.DUMPED, error="")


def load(app, environment, payload, job_id=None):
    # Runs before the start that migrates and serves it here; a failure raises, answered as the command's failure.
    loaded = transfer.load(app, payload, command_redis())
    if payload.get("fresh"):  # a clone's data: the new application's own admin account, no sessions of the source
        backups.make_own(app, payload)
    return dict(loaded, app=app, environment=environment, state=contract.LOADED, error="")


HANDLERS = {
    contract.START: start,
    contract.STOP: stop,
    contract.RESTART: restart,
    contract.REMOVE: remove,
    contract.PING: ping,
    contract.DUMP: dump,
    contract.LOAD: load,
    contract.UPGRADE: upgrade.upgrade,
    contract.MANAGE: appcommand.run,
}
assert set(HANDLERS) == set(contract.COMMANDS)


def execute(command, app, environment, payload, job_id, issued_at, expires_at, generation=None):
    # CommandWorker has already checked the signature, the command, the environment, the placement, the job id,
    # the expiry, the application's incarnation, and that this job did not run here before.
    result = HANDLERS[command](app, environment, payload or {}, job_id=job_id)
    if command in (contract.START, contract.RESTART, contract.MANAGE):
        upgrade.report(app, environment)  # what its database still lacks, as of now
    elif command == contract.REMOVE:
        upgrade.forget(app, environment)
    # Signed with the result: the supervisor accepts it only as the answer to this very job, so a result copied
    # from another job (another application's "stopped") is never taken for this one's.
    return dict(result, **channel.binding(job_id, app, environment, command))
