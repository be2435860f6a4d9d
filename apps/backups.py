"""Backups of an application's database (docs/architecture.md, "Backups and restores"): the one implementation
behind ``POST /api/apps/<name>/backups``, ``…/restore``, clones (``POST /api/apps/`` with ``clone_of`` or
``from_backup``), the admin's actions and the controller's schedule.

A backup is the move's dump (apps.moves, workers.transfer): the agent where the application runs dumps it
engine-native while it keeps serving (``pg_dump`` custom format; SQLite's online backup API) into a transfer in
Redis; the supervisor reads it back as it comes, checked against the SHA-256 of the agent's signed answer, and
stores it through Django's storage API (``STORAGES["backups"]``), off every environment. Its row is written only
once the bytes are stored whole: an agent killed mid-dump, a Redis flushed mid-transfer or a full disk leave no
backup listed.

A restore pushes the stored bytes into a transfer for the agents, reading them once, and refuses them before
anything else is done unless their SHA-256 is the recorded one and they are a dump of the engine they claim; then,
under the application's lifecycle lock: a safety backup, stop, load (the dump restored), start (migrations, the
admin account) on each of its environments, or on the one named (``environment``: how an application whose
environment is gone comes back elsewhere; it then runs there alone).
"""

import contextlib
import logging
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import redis
from croniter import croniter
from django.conf import settings
from django.core.files import File
from django.core.files.storage import storages
from django.db import IntegrityError, transaction
from django.utils import timezone

from environments.models import Environment
from exchange import contract, transfer
from exchange.redis_client import command_redis

from . import lifecycle, moves
from .models import Application, Backup, BackupSlot, Placement, Restore

log = logging.getLogger("appsup.supervisor")

# What the first bytes of a dump of each engine are: a pg_dump custom-format archive, a SQLite database file.
MAGIC = {contract.POSTGRES_ENGINE: b"PGDMP", contract.SQLITE_ENGINE: b"SQLite format 3\x00"}
SUFFIX = {contract.POSTGRES_ENGINE: "pgdump", contract.SQLITE_ENGINE: "sqlite3"}
# A restore's steps, in order (Restore.step).
SAFETY_STEP, STOP_STEP, LOAD_STEP, START_STEP = "safety backup", "stop", "load", "start"
CUT_OFF = "cut off: the process running it stopped before it ended"
RESTORES_LISTED = 10  # the last restores the API and the admin show


class BackupRefused(Exception):
    """Nothing was done (a backup that does not check out, an environment that cannot take it); STATUS is the
    API's answer, ENVIRONMENT the environment concerned, if any."""

    def __init__(self, message, status=409, environment=None):
        super().__init__(message)
        self.status = status
        self.environment = environment


class BackupFailed(Exception):
    """A step failed on ENVIRONMENT (STEP); TIMEOUT: it did not answer in time."""

    def __init__(self, message, step, environment, timeout=False):
        super().__init__(message)
        self.step = step
        self.environment = environment
        self.timeout = timeout


def storage():
    return storages["backups"]


class _Scratch(File):
    """A dump in a scratch file, offered to the storage as an upload's temporary file is: a file system storage on
    the same disk renames it into place instead of copying it (of a 100 MB backup, a fifth of its time)."""

    def temporary_file_path(self):
        return self.file.name


SCRATCH = ".scratch-"  # the prefix of a backup's scratch directory


def sweep_scratch(now):
    """Delete the scratch directories (beside a file system backup storage) of backups cut off by a supervisor
    process killed mid-backup: each holds up to a whole dump. Only those an hour old (NOW: a time.time()), when the
    transfer they were read from has expired: younger ones may be a backup under way in another process. Returns
    how many."""
    location = getattr(storage(), "location", None)
    if location is None or not Path(location).is_dir():
        return 0
    stale = [path for path in Path(location).glob(f"{SCRATCH}*")
             if path.is_dir() and now - path.stat().st_mtime >= contract.TRANSFER_TTL]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
        log.info("deleted %s, the scratch directory of a backup cut off", path)
    return len(stale)


def _scratch_dir():
    """Where to write a dump before storing it: beside a file system storage's files (so that storing is a rename),
    else the system's temporary directory."""
    location = getattr(storage(), "location", None)
    if location is None:
        return None
    Path(location).mkdir(parents=True, exist_ok=True)
    return location


# -- taking one ---------------------------------------------------------------------------------------------------


def take(application, kind=Backup.MANUAL, timeout=None, clock=time.monotonic, environment=None):
    """Back up APPLICATION's database from ENVIRONMENT (a name), or else the first of its environments that is
    online; returns the Backup. Raises BackupRefused (no environment to take it from), BackupFailed,
    lifecycle.OperationInProgress."""
    _refuse_single_instance()
    timeout = settings.APP_COMMAND_TIMEOUT if timeout is None else timeout
    with lifecycle._held(application.name, wait=lifecycle._lock_wait(timeout)) as renew:
        lifecycle.runner.sync_environments()
        application = Application.objects.with_placements().get(pk=application.pk)
        return _take(application, source(application, environment), kind, clock() + timeout, clock, renew)


def source(application, name=None):
    """The environment a backup of APPLICATION is taken on: the one named NAME, or its first online one; or
    BackupRefused."""
    placements = application.ordered_placements()
    if name is not None:
        placements = [p for p in placements if p.environment.name == name]
        if not placements:
            raise BackupRefused(f"{application.name} is not placed on {name}: there is no database of it there",
                                environment=name)
    for placement in placements:
        if placement.environment.is_online():
            return placement.environment
    if not placements:
        raise BackupRefused(f"{application.name} is placed on no environment: there is no database to back up")
    names = ", ".join(p.environment.name for p in placements)
    raise BackupRefused(f"{application.name} cannot be backed up now: none of its environments ({names}) is online; "
                        "its last backup is what there is", environment=placements[0].environment.name)


def _take(application, environment, kind, deadline, clock, renew):
    """The dump of APPLICATION on ENVIRONMENT, stored and recorded (the caller holds the application's lock)."""
    transfer_id = f"backup-{application.name}-{uuid.uuid4().hex[:16]}"
    conn = command_redis()
    try:
        with tempfile.TemporaryDirectory(prefix=f"{SCRATCH}{application.name}-", dir=_scratch_dir()) as scratch:
            path = Path(scratch) / "dump"
            # Read while the agent pushes it; checked against its answer once that is in.
            follower = transfer.Follower(conn, transfer_id, path)
            try:
                dumped = _run(application, environment, contract.DUMP, {"transfer": transfer_id}, contract.DUMPED,
                              "dump", deadline, clock, renew)
            except BaseException:
                follower.abandon()
                raise
            engine = dumped.get("engine")
            if engine not in MAGIC:
                follower.abandon()
                raise BackupFailed(f"{environment.name} answered a dump of an unknown engine {engine!r}", "dump",
                                   environment.name)
            try:
                follower.finish(dumped.get("sha256"), dumped.get("size"), dumped.get("chunks"))
            except transfer.TransferRefused as exc:
                raise BackupFailed(f"the dump of {application.name} did not arrive whole: {exc}", "store",
                                   environment.name) from exc
            problem = dump_problem(path, engine)
            if problem:
                raise BackupFailed(f"{environment.name} answered {problem}", "store", environment.name)
            renew()
            now = timezone.now()
            name = (f"{application.name}/{application.name}-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}."
                    f"{SUFFIX[engine]}")
            with open(path, "rb") as dump_file:
                stored = storage().save(name, _Scratch(dump_file))
        try:
            backup = Backup.objects.create(application=application, environment=environment.name, engine=engine,
                                           kind=kind, file=stored, size=dumped["size"], sha256=dumped["sha256"],
                                           created_at=now)
        except Exception:
            with contextlib.suppress(Exception):
                storage().delete(stored)
            raise
    finally:
        with contextlib.suppress(redis.RedisError):
            transfer.discard(conn, transfer_id)
    log.info("%s: backup %s taken on %s (%d bytes)", application.name, backup.pk, environment.name, backup.size)
    if kind != Backup.SAFETY:
        prune(application)
    return backup


def dump_problem(path, engine):
    """Why the file PATH is not a dump of ENGINE ("" when it is one)."""
    with open(path, "rb") as dump_file:
        return dump_head_problem(dump_file.read(16), engine)


def dump_head_problem(head, engine):
    """Why a file beginning with the bytes HEAD is not a dump of ENGINE ("" when it is one)."""
    if head.startswith(MAGIC[engine]):
        return ""
    other = next((name for name, magic in MAGIC.items() if head.startswith(magic)), None)
    return f"a {other} dump, not a {engine} one" if other else f"not a {engine} database dump"


SINGLE_INSTANCE = ("backups are taken and restored by workers' agents through Redis, and a single instance has "
                   "neither; back up its storage directory (APP_STORAGE_DIR) instead")


def _refuse_single_instance():
    if not settings.APP_MODE:
        raise BackupRefused(SINGLE_INSTANCE)


def _run(application, environment, command, payload, expected, step, deadline, clock, renew):
    # Liveness as of now: the steps before this one (a dump, a load of a big database) may have taken longer than a
    # heartbeat timeout, and ENVIRONMENT was read before them.
    lifecycle.runner.sync_environments()
    environment.refresh_from_db()
    if not environment.is_online():
        raise BackupFailed(f"{step} on {environment.name} failed: {environment.offline_reason()}", step,
                           environment.name)
    placement = Placement(application=application, environment=environment)
    result = lifecycle.runner.execute(placement, command, payload, deadline, clock, renew)
    if isinstance(result, lifecycle.Failure):
        raise BackupFailed(f"{step} on {environment.name} failed: {result.message}", step, environment.name,
                           timeout=result.kind == lifecycle.TIMEOUT)
    if result.get("state") != expected:
        detail = result.get("error") or f"it ended {result.get('state')}"
        raise BackupFailed(f"{step} on {environment.name} failed: {detail}", step, environment.name)
    return result


# -- retention ----------------------------------------------------------------------------------------------------


def keep(application):
    return application.backup_keep or settings.APP_BACKUP_KEEP


def prune(application):
    """Delete APPLICATION's backups past its newest ``keep`` (safety backups count like any other); returns how
    many. The row goes first: a file left by a crash between the two is never listed."""
    old = list(Backup.objects.filter(application=application).order_by("-created_at", "-pk")[keep(application):])
    for backup in old:
        backup.delete()
        try:
            storage().delete(backup.file)
        except Exception as exc:  # listed nowhere any more; the operator's storage keeps a stray file
            log.warning("%s: could not delete the file of backup %s (%s): %s", application.name, backup.pk,
                        backup.file, exc)
    return len(old)


# -- reading one back ---------------------------------------------------------------------------------------------


def upload_checked(backup, conn, transfer_id):
    """Push BACKUP's stored bytes into the transfer TRANSFER_ID, read once and checked on the way; returns the
    transfer's ``{"sha256", "size", "chunks"}``. BackupRefused (409), naming what is wrong, unless they are a dump of
    its engine and the recorded bytes: the caller discards the transfer and has done nothing else."""
    try:
        with storage().open(backup.file, "rb") as stored:
            head = stored.read(16)
            problem = dump_head_problem(head, backup.engine)
            if problem:
                raise BackupRefused(f"backup {backup.pk} of {backup.application.name} is {problem}; refused, nothing "
                                    "was restored")
            stored.seek(0)
            sent = transfer.upload(conn, transfer_id, stored)
    except (BackupRefused, redis.RedisError):
        raise
    except Exception as exc:  # a file gone, a bucket unreachable or refusing: the storage's own errors
        raise BackupRefused(f"backup {backup.pk} cannot be read from the backup storage ({backup.file}): {exc}; "
                            "nothing was restored") from exc
    if sent["size"] != backup.size or sent["sha256"] != backup.sha256:
        raise BackupRefused(
            f"backup {backup.pk} of {backup.application.name} is damaged: its stored bytes ({sent['size']} bytes, "
            f"SHA-256 {sent['sha256']}) are not the ones recorded ({backup.size} bytes, SHA-256 {backup.sha256}); "
            "refused, nothing was restored")
    return sent


def open_stored(backup):
    return storage().open(backup.file, "rb")


# -- restoring one ------------------------------------------------------------------------------------------------


@dataclass
class Restored:
    backup: Backup
    safety: Backup | None
    environments: list
    seconds: float
    record: Restore


def restore(application, backup, environment=None, timeout=None, progress=None, clock=time.monotonic):
    """Make APPLICATION's data BACKUP's: on each of its environments, or on ENVIRONMENT (a name) alone, where it
    then runs. Returns Restored. Raises BackupRefused (nothing done), BackupFailed (after the stop: the error
    names the safety backup), lifecycle.OperationInProgress. Once it has begun, its Restore row tells the step it
    is at, each change announced as an ``app`` event (pages and /ws/events/ follow it live)."""
    _refuse_single_instance()
    timeout = settings.APP_COMMAND_TIMEOUT if timeout is None else timeout
    began = clock()
    if backup.application_id != application.pk:
        raise BackupRefused(f"backup {backup.pk} is {backup.application.name}'s, not {application.name}'s: to start "
                            f"an application from it, create one with from_backup", status=400)
    with _uploaded(backup, application, "restore") as sent:
        with lifecycle._held(application.name, wait=lifecycle._lock_wait(timeout)) as renew:
            lifecycle.runner.sync_environments()
            application = Application.objects.with_placements().get(pk=application.pk)
            targets, replace = _targets(application, environment)
            # One holding the lock now: any restore still shown active was cut off (its process killed).
            Restore.objects.filter(application=application, state=Restore.ACTIVE).update(
                state=Restore.FAILED, error=CUT_OFF, finished_at=timezone.now())
            record = Restore.objects.create(application=application, backup=backup,
                                            environments=[env.name for env in targets])

            def advance(step):
                _advance(record, step, progress)

            try:
                deadline = clock() + timeout
                safety = None
                placed = [env for env in targets if env.name in application.environment_names()]
                if placed:
                    advance(SAFETY_STEP)
                    safety = _take(application, placed[0], Backup.SAFETY, deadline, clock, renew)
                    record.safety = safety
                    record.save(update_fields=["safety"])
                    if safety.engine != backup.engine:
                        raise BackupRefused(f"backup {backup.pk} is a {backup.engine} dump and {application.name}'s "
                                            f"database on {placed[0].name} is {safety.engine}: refused, nothing was "
                                            "restored", environment=placed[0].name)
                _load_everywhere(application, backup, sent, targets, replace, safety, deadline, clock, renew,
                                 advance)
            except BaseException as exc:
                _end(record, Restore.FAILED, str(exc) or type(exc).__name__)
                raise
            _end(record, Restore.DONE, "")
    return Restored(backup, safety, [env.name for env in targets], clock() - began, record)


def _targets(application, name):
    """(environments to restore on, whether they replace the application's placements)."""
    placed = [p.environment for p in application.ordered_placements()]
    if name is None:
        offline = [env.name for env in placed if not env.is_online()]
        if not placed:
            raise BackupRefused(f"{application.name} is placed on no environment; name one to restore it on "
                                '({"environment": name})', status=400)
        if offline:
            raise BackupRefused(
                f"{application.name} cannot be restored on {', '.join(offline)}: offline. If it will not come back, "
                f'restore onto another environment: {{"backup": id, "environment": name}}', environment=offline[0])
        return placed, False
    if not isinstance(name, str) or not contract.NAME_RE.fullmatch(name):
        raise BackupRefused(f"'environment' must name an environment ({contract.NAME_RULE})", status=400)
    target = Environment.objects.filter(name=name).first()
    if target is None:
        raise BackupRefused(f"no environment named {name!r}", status=400, environment=name)
    refusal = moves.destination_refusal(target)
    if refusal:
        raise BackupRefused(f"{application.name} cannot be restored on {name}: {refusal}", environment=name)
    return [target], [env.name for env in placed] != [name]


@contextlib.contextmanager
def _uploaded(backup, application, purpose):
    """BACKUP's bytes in a transfer for APPLICATION's agents, checked (upload_checked) before anything else is
    done; yields the load's manifest, and discards the transfer after."""
    transfer_id = f"{purpose}-{application.name}-{uuid.uuid4().hex[:16]}"
    conn = command_redis()
    try:
        sent = upload_checked(backup, conn, transfer_id)
        yield {"transfer": transfer_id, "engine": backup.engine, "place": None, **sent}
    finally:
        with contextlib.suppress(redis.RedisError):
            transfer.discard(conn, transfer_id)


def _load_everywhere(application, backup, manifest, targets, replace, safety, deadline, clock, renew, progress):
    placed = set(application.environment_names())
    after = f" ({application.name}'s data before it is in safety backup {safety.pk})" if safety else ""
    try:
        progress(STOP_STEP)
        for env in targets:
            if env.name in placed:
                _run(application, env, contract.STOP, {}, contract.STOPPED, "stop", deadline, clock, renew)
        if replace:
            _replace_placements(application, targets[0])
            lifecycle.runner.publish(application)  # the new environment takes the application's commands
        progress(LOAD_STEP)
        for env in targets:
            _run(application, env, contract.LOAD, manifest, contract.LOADED, "load", deadline, clock, renew)
        progress(START_STEP)
        payload = {"admin_username": application.admin_username,
                   "admin_password_hash": application.admin_password_hash}
        for env in targets:
            _run(application, env, contract.START, payload, contract.RUNNING, "start", deadline, clock, renew)
            state = contract.RUNNING
            if application.desired_state == contract.STOPPED:
                _run(application, env, contract.STOP, {}, contract.STOPPED, "start", deadline, clock, renew)
                state = contract.STOPPED
            # What the answer says, not what the mirror last read: the answer of this call shows it.
            Placement.objects.filter(application=application, environment=env).update(
                state=state, error="", traceback="", state_at=timezone.now())
    except BackupFailed as exc:
        exc.args = (f"restore of backup {backup.pk} failed: {exc}{after}",)
        raise


def _replace_placements(application, environment):
    with transaction.atomic():
        Placement.objects.filter(application=application).delete()
        Placement.objects.create(application=application, environment=environment, position=0,
                                 state=contract.STOPPED, state_at=timezone.now())


def _advance(record, step, progress):
    record.step = step
    record.save(update_fields=["step"])
    lifecycle.runner.announce(record.application.name)  # open pages read it again; the row is the truth
    if progress:
        progress(step)


def _end(record, state, error):
    record.state, record.error, record.finished_at = state, error, timezone.now()
    record.save(update_fields=["state", "error", "finished_at"])
    lifecycle.runner.announce(record.application.name)


# -- clones -------------------------------------------------------------------------------------------------------


def seed(application, backup, timeout=None, clock=time.monotonic):
    """Load BACKUP (another application's) into APPLICATION, just created and never started, on each of its
    environments; its admin account is the one APPLICATION was created with, its sessions none (workers.backups)."""
    _refuse_single_instance()
    timeout = settings.APP_COMMAND_TIMEOUT if timeout is None else timeout
    with _uploaded(backup, application, "clone") as sent, \
            lifecycle._held(application.name, wait=lifecycle._lock_wait(timeout)) as renew:
        lifecycle.runner.sync_environments()
        application = Application.objects.with_placements().get(pk=application.pk)
        deadline = clock() + timeout
        manifest = {**sent, "admin_username": application.admin_username,
                    "admin_password_hash": application.admin_password_hash, "fresh": True}
        for env in [p.environment for p in application.ordered_placements()]:
            _run(application, env, contract.LOAD, manifest, contract.LOADED, "load", deadline, clock, renew)


# -- schedule -----------------------------------------------------------------------------------------------------


def schedule_of(application):
    """APPLICATION's cron expression, or "" for none."""
    own = (application.backup_schedule or "").strip()
    if own.lower() == "off":
        return ""
    return own or settings.APP_BACKUP_SCHEDULE


def last_slot(expression, now):
    """The latest time at or before NOW that EXPRESSION names (UTC)."""
    it = croniter(expression, now + timedelta(seconds=1))
    return it.get_prev(type(now))


def run_due(now, holder="", timeout=None, alert=None):
    """The controller's step: claim and take one scheduled backup whose slot has come (the latest slot of its
    application's schedule, not before the application existed, not claimed yet), whichever controller gets to it
    first: the claim is a BackupSlot row, unique per (application, slot). A failure is recorded on the slot and
    raised as an alert (ALERT(application, message, now)). Returns whether there was one."""
    candidates = Application.objects.exclude(placements=None).order_by("name")
    if not settings.APP_BACKUP_SCHEDULE:
        candidates = candidates.exclude(backup_schedule="").exclude(backup_schedule__iexact="off")
    for application in candidates.only("pk", "name", "backup_schedule", "backup_keep", "created_at"):
        expression = schedule_of(application)
        if not expression:
            continue
        try:
            slot = last_slot(expression, now)
        except (ValueError, KeyError) as exc:  # an expression the admin's check let through: say it, once a slot
            log.warning("%s: backup schedule %r: %s", application.name, expression, exc)
            continue
        if slot < application.created_at:
            continue
        if BackupSlot.objects.filter(application=application, slot=slot).exists():
            continue
        try:
            with transaction.atomic():
                claimed = BackupSlot.objects.create(application=application, slot=slot, claimed_by=holder)
        except IntegrityError:  # another controller claimed it first
            continue
        try:
            backup = take(application, kind=Backup.SCHEDULED, timeout=timeout)
        except (BackupRefused, BackupFailed, lifecycle.OperationInProgress, redis.RedisError) as exc:
            message = (f"the scheduled backup of {application.name} ({slot:%Y-%m-%d %H:%M} UTC) failed: {exc}")
            log.warning("%s", message)
            BackupSlot.objects.filter(pk=claimed.pk).update(error=message)
            if alert:
                alert(application, getattr(exc, "environment", None), message, now)
            return True
        BackupSlot.objects.filter(pk=claimed.pk).update(backup=backup)
        return True
    return False
