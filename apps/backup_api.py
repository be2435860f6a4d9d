"""JSON API: an application's backups and restores (docs/architecture.md, "Backups and restores"; apps.backups).

BACKUP = ``{"id", "app", "environment", "engine", "kind", "size", "sha256", "created_at", "download"}``; ``sha256``
is of the stored bytes, ``kind`` manual, scheduled or safety (taken before a restore), ``download`` the URL below.

=========================================  =====================================================================
call                                       answers
=========================================  =====================================================================
``GET /api/apps/<name>/backups``           200 ``{"backups": [BACKUP, …], "restores": [RESTORE, …]}``,
                                           newest first (the last 10 restores: one under way shows its step)
``POST /api/apps/<name>/backups``          201 BACKUP once stored; 409 no environment of it is online, or the
                                           dump failed there (``{"error", "environment", "step"}``); 423
                                           another operation in progress; 503 Redis; 504 no answer in time
``GET /api/apps/<name>/backups/<id>``      200 the dump's bytes (``application/octet-stream``, attachment)
``POST /api/apps/<name>/restore``          body ``{"backup": id, "environment": name (optional)}``; 200
                                           ``{"restore": RESTORE + {"seconds"}, "app": APP}`` once it runs on
                                           the backup's data; 400 bad
                                           body, a backup of another application, an unknown environment; 404
                                           no such backup of it; 409 the backup's bytes are not the recorded ones
                                           or not a dump of its engine, an environment is offline (nothing done),
                                           or a step failed (the error names the safety backup); 423, 503, 504
=========================================  =====================================================================

RESTORE = ``{"id", "backup", "safety_backup", "environments", "state": "active"|"done"|"failed", "step": "safety
backup"|"stop"|"load"|"start"|null, "error", "started_at", "finished_at"}``; each change of it is announced as an
``app`` event on /ws/events/.

``environment``: restore there, and run there alone, the application's other placements dropped: how an application
whose environment is gone for good comes back on another.
"""

import redis
from django.http import FileResponse, HttpResponse

from api.auth import api_view, error, iso, json_response, malformed, read_json

from . import api, backups, lifecycle
from .models import BACKUP_PERMISSION, Application, Backup, Restore

RESTORE_FIELDS = ("backup", "environment")


def backup_dict(backup):
    name = backup.application.name
    return {
        "id": backup.pk, "app": name, "environment": backup.environment, "engine": backup.engine,
        "kind": backup.kind, "size": backup.size, "sha256": backup.sha256, "created_at": iso(backup.created_at),
        "download": f"/api/apps/{name}/backups/{backup.pk}",
    }


def restore_dict(restore):
    return {
        "id": restore.pk, "backup": restore.backup_id, "safety_backup": restore.safety_id,
        "environments": restore.environments, "state": restore.state, "step": restore.step or None,
        "error": restore.error or None, "started_at": iso(restore.started_at), "finished_at": iso(restore.finished_at),
    }


def failure(exc, application):
    """The answer for an exception of apps.backups (or the lifecycle lock, or Redis)."""
    if isinstance(exc, backups.BackupRefused):
        return error(str(exc), exc.status, environment=exc.environment, step=None)
    if isinstance(exc, backups.BackupFailed):
        return error(str(exc), 504 if exc.timeout else 409, environment=exc.environment, step=exc.step)
    if isinstance(exc, lifecycle.OperationInProgress):
        return error(str(exc), 423, environment=None, step=None)
    if isinstance(exc, redis.RedisError):
        return error(api.REDIS_DOWN.format(error=exc), 503, environment=None, step=None)
    raise exc


FAILURES = (backups.BackupRefused, backups.BackupFailed, lifecycle.OperationInProgress, redis.RedisError)


@api_view("GET", "POST", permission={"GET": "apps.view_application", "POST": BACKUP_PERMISSION})
def app_backups(request, name):
    application, timeout, refusal = api.target(request, name)
    if refusal is not None:
        return refusal
    if request.method == "GET":
        listed = Backup.objects.filter(application=application).select_related("application")
        restores = Restore.objects.filter(application=application)[:backups.RESTORES_LISTED]
        return json_response({"backups": [backup_dict(b) for b in listed],
                              "restores": [restore_dict(r) for r in restores]})
    try:
        backup = backups.take(application, timeout=timeout)
    except FAILURES as exc:
        return failure(exc, application)
    response = json_response(backup_dict(backup), status=201)
    response["Location"] = f"/api/apps/{application.name}/backups/{backup.pk}"
    return response


@api_view("GET", permission=BACKUP_PERMISSION)
def app_backup_download(request, name, backup_id):
    backup = _backup_of(name, backup_id)
    if isinstance(backup, HttpResponse):
        return backup
    try:
        stored = backups.open_stored(backup)
    except Exception as exc:  # the storage is away, or the file went missing behind its back
        return error(f"backup {backup.pk} cannot be read from the backup storage: {exc}", 409, environment=None)
    filename = backup.file.rsplit("/", 1)[-1]
    return FileResponse(stored, as_attachment=True, filename=filename, content_type="application/octet-stream")


def _backup_of(name, backup_id):
    application = api._load(name)
    if application is None:
        return api._unknown(name)
    if not backup_id.isdigit() or len(backup_id) > 18:  # no backup has it; the database must not be asked
        return error(f"{name} has no backup {backup_id!r}", 404, environment=None)
    backup = Backup.objects.filter(application=application, pk=backup_id).select_related("application").first()
    if backup is None:
        return error(f"{name} has no backup {backup_id}", 404, environment=None)
    return backup


@api_view("POST", permission=BACKUP_PERMISSION)
def app_restore(request, name):
    application, timeout, refusal = api.target(request, name)
    if refusal is not None:
        return refusal
    data, refusal = read_json(request)
    if refusal is not None:
        return refusal
    if not isinstance(data, dict):
        return malformed('the body must be a JSON object {"backup": id, "environment": name (optional)}')
    errors = {field: ["Unknown field."] for field in sorted(set(data) - set(RESTORE_FIELDS))}
    if not isinstance(data.get("backup"), int) or isinstance(data.get("backup"), bool):
        errors["backup"] = ["Give the id of one of its backups (a whole number)."]
    if data.get("environment") is not None and not isinstance(data["environment"], str):
        errors["environment"] = ["Give the name of an environment, or leave it out."]
    if errors:
        return json_response({"errors": errors}, status=400)
    backup = Backup.objects.filter(pk=data["backup"]).select_related("application").first()
    if backup is None:
        return error(f"there is no backup {data['backup']}", 404, environment=None, step=None)
    try:
        restored = backups.restore(application, backup, environment=data.get("environment"), timeout=timeout)
    except FAILURES as exc:
        return failure(exc, application)
    fresh = Application.objects.with_placements().get(pk=application.pk)
    return json_response({
        "restore": dict(restore_dict(restored.record), seconds=round(restored.seconds, 3)),
        "app": api.app_dict(fresh),
    })
