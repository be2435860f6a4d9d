"""A new application that starts with another's data (docs/architecture.md, "Backups and restores"):
``POST /api/apps/`` with ``"clone_of": name`` (a fresh backup of that application is taken) or ``"from_backup": id``
(any application's backup), and the admin's add form with a template. The data is loaded on each of its
environments before its first start; its name, cookies and admin account are its own (workers.backups), and it
shares nothing with the source afterwards. Taking another application's data needs apps.backup_application on top
of apps.add_application. Should the data not load, the new application is removed again."""

import contextlib
import logging

import redis

from api.auth import error, forbidden, json_response, missing_permission

from . import backups, lifecycle
from .models import BACKUP_PERMISSION, Application, Backup

log = logging.getLogger("appsup.supervisor")

FIELDS = ("clone_of", "from_backup")


def seed_of(request, data, mistyped):
    """Take ``clone_of`` / ``from_backup`` out of DATA: ``(seed, None)``, seed None (no data asked for), an
    Application (clone it) or a Backup; or ``(None, the 400/403 answer)``. MISTYPED gains nothing: the other fields'
    errors are the form's."""
    clone_of, from_backup = data.pop("clone_of", None), data.pop("from_backup", None)
    if clone_of is None and from_backup is None:
        return None, None
    errors = {}
    if clone_of is not None and from_backup is not None:
        errors["__all__"] = ["Give clone_of or from_backup, not both."]
    elif clone_of is not None and not isinstance(clone_of, str):
        errors["clone_of"] = ["Give the name of an application."]
    elif from_backup is not None and (not isinstance(from_backup, int) or isinstance(from_backup, bool)):
        errors["from_backup"] = ["Give the id of a backup (a whole number)."]
    if errors:
        return None, json_response({"errors": errors}, status=400)
    missing = missing_permission(request, (BACKUP_PERMISSION,))
    if missing is not None:
        return None, forbidden(request, missing)
    if clone_of is not None:
        source = Application.objects.filter(name=clone_of).first()
        if source is None:
            return None, json_response({"errors": {"clone_of": [f"There is no application named {clone_of!r}."]}},
                                       status=400)
        return source, None
    backup = Backup.objects.filter(pk=from_backup).select_related("application").first()
    if backup is None:
        return None, json_response({"errors": {"from_backup": [f"There is no backup {from_backup}."]}}, status=400)
    return backup, None


def fill(application, seed, timeout=None):
    """Load SEED's data (an Application: a fresh backup of it; a Backup) into APPLICATION, just created; None when
    done, else the answer saying why, APPLICATION removed again."""
    try:
        backup = seed if isinstance(seed, Backup) else backups.take(seed, timeout=timeout)
        backups.seed(application, backup, timeout=timeout)
        return None
    except (backups.BackupRefused, backups.BackupFailed, lifecycle.OperationInProgress, redis.RedisError) as exc:
        log.warning("%s: could not start from %s's data: %s", application.name, seed, exc)
        _undo(application, timeout)
        status = getattr(exc, "status", None) or (423 if isinstance(exc, lifecycle.OperationInProgress) else
                                                  503 if isinstance(exc, redis.RedisError) else
                                                  504 if getattr(exc, "timeout", False) else 409)
        return error(f"{application.name} was not created: its data could not be loaded: {exc}", status,
                     environment=getattr(exc, "environment", None))


def _undo(application, timeout):
    """Remove APPLICATION (and what its failed load left), best effort: the answer says why it was not created."""
    with contextlib.suppress(Exception):
        outcome = lifecycle.remove(application, drop_database=True, timeout=timeout, force=True)
        if outcome.ok:
            return
    with contextlib.suppress(Exception):
        Application.objects.filter(pk=application.pk).delete()
