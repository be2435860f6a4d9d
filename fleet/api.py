"""JSON API of fleet upgrades and of commands across applications (docs/architecture.md, "Fleet upgrades" and
"Commands across applications"; docs/api.md).

=====================================  ====================================================================
call                                   answers
=====================================  ====================================================================
``POST /api/upgrade``                  body ``{}`` (every application that reports pending migrations) or
                                       ``{"apps": [names]}`` → 202 UPGRADE (and ``Location``) at once: the
                                       controller migrates in the background; 400 ``{"errors"}`` for a bad
                                       body or unknown applications
``GET /api/upgrades/<id>``             200 UPGRADE = ``{"id", "state": "running"|"done"|"failed", "apps",
                                       "automatic", "asked_by", "created_at", "finished_at", "total",
                                       "done", "failed", "steps": [STEP]}``, STEP = ``{"app",
                                       "environment", "state", "migrations", "applied", "backup", "error",
                                       "started_at", "finished_at"}``; 404
``POST /api/apps/<name>/command``      body ``{"command": name, "args": [strings]}``; runs it on each of the
                                       application's environments and waits (``?timeout=``) → 200
                                       ``{"app", "command", "args", "ok", "results": [RESULT]}``, RESULT =
                                       ``{"app", "environment", "exit_status", "output", "truncated",
                                       "error", "ok"}`` (a failure there is a result, not an HTTP error);
                                       400 refused command or arguments; 404; 503 Redis unavailable
=====================================  ====================================================================
"""

import re

import redis

from api.auth import api_view, error, json_response, malformed, read_json
from apps import api as apps_api
from apps.models import OPERATE_PERMISSION

from . import appcommands, upgrades
from .models import Upgrade

UPGRADE_FIELDS = ("apps",)
ID_RE = re.compile(r"[0-9]{1,18}")  # ASCII only: str.isdigit() takes "²", which int() refuses
COMMAND_FIELDS = ("command", "args")


def _asked_by(request):
    user = getattr(request, "user", None)
    if getattr(request, "api_auth", "") == "token" or user is None or not user.is_authenticated:
        return "API token"
    return user.get_username()


@api_view("POST", permission=OPERATE_PERMISSION)
def upgrade_collection(request):
    data, refusal = read_json(request)
    if refusal is not None:
        return refusal
    if not isinstance(data, dict):
        return malformed('the body must be a JSON object: {} for every application that needs it, or '
                         '{"apps": [names]}')
    errors = {field: ["Unknown field; an upgrade takes apps."] for field in data if field not in UPGRADE_FIELDS}
    apps = data.get("apps")
    if "apps" in data and (not isinstance(apps, list) or not apps or not all(isinstance(a, str) for a in apps)):
        errors["apps"] = ["Give a non-empty list of application names, or leave it out for every application."]
    if errors:
        return json_response({"errors": errors}, status=400)
    try:
        upgrade = upgrades.create(apps, asked_by=_asked_by(request))
    except upgrades.UnknownApps as exc:
        return json_response({"errors": {"apps": [str(exc)]}}, status=400)
    response = json_response(upgrades.upgrade_dict(upgrade), status=202)
    response["Location"] = f"/api/upgrades/{upgrade.pk}"
    return response


@api_view("GET", permission="apps.view_application")
def upgrade_detail(request, upgrade_id):
    upgrade = Upgrade.objects.filter(pk=int(upgrade_id)).prefetch_related("steps").first() \
        if ID_RE.fullmatch(upgrade_id) else None
    if upgrade is None:
        return error(f"no upgrade {upgrade_id}", 404)
    return json_response(upgrades.upgrade_dict(upgrade))


@api_view("POST", permission=OPERATE_PERMISSION)
def app_management_command(request, name):
    application, timeout, refusal = apps_api.target(request, name)
    if refusal is not None:
        return refusal
    data, refusal = read_json(request)
    if refusal is not None:
        return refusal
    if not isinstance(data, dict):
        return malformed('the body must be a JSON object {"command": name, "args": [strings]}')
    errors = {field: ["Unknown field; give command and args."] for field in data if field not in COMMAND_FIELDS}
    command, args = data.get("command"), data.get("args", [])
    if not isinstance(command, str) or not command:
        errors["command"] = ["Give the name of a management command."]
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        errors["args"] = ["Give a list of strings."]
    if errors:
        return json_response({"errors": errors}, status=400)
    try:
        results = appcommands.run([application], command, args, timeout=timeout)
    except appcommands.Refused as exc:
        return json_response({"errors": {"command": [str(exc)]}}, status=400)
    except redis.RedisError as exc:
        return error(apps_api.REDIS_DOWN.format(error=exc), 503)
    return json_response({"app": application.name, "command": command, "args": args,
                          "ok": all(r.ok for r in results), "results": [r.as_dict() for r in results]})
