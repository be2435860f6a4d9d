"""JSON API: ``POST /api/apps/<name>/move`` (docs/architecture.md, "JSON API" and "Moving an application").

Body ``{"from": environment, "to": environment, "drop_database": false}``; ``?timeout=`` as for start. Answers
200 ``{"move": MOVE, "app": APP}`` once the application runs on the destination, MOVE = ``{"app", "from", "to",
"state", "step", "error", "size", "sha256", "seconds", "started_at", "finished_at"}`` (``error`` says what was not
tidied after the switch, e.g. a source that could not be removed). Failures ``{"error", "environment", "step"}``:
400 (bad body, or a move that cannot be: same environment, not placed on ``from``, already on ``to``, ``to``
unknown, offline, degraded or not verified), 404 (no such application), 409 (``from`` offline, or a step failed:
the application is left running where it was), 423 (another operation in progress), 503 (Redis unavailable), 504
(a step timed out).
"""

import redis
from django.http import HttpResponse

from api.auth import api_view, error, iso, json_response, malformed, read_json

from . import api, lifecycle, moves
from .models import OPERATE_PERMISSION, Application

MOVE_FIELDS = ("from", "to", "drop_database")


def move_dict(record, seconds=None):
    return {
        "app": record.application.name, "from": record.source.name, "to": record.destination.name,
        "state": record.state, "step": record.step, "error": record.error or None, "size": record.size,
        "sha256": record.sha256 or None, "seconds": None if seconds is None else round(seconds, 3),
        "started_at": iso(record.started_at), "finished_at": iso(record.finished_at),
    }


def _body(request):
    """(from, to, drop_database, None) or (None, None, None, the 400/413/415 answer)."""
    data, refusal = read_json(request)
    if refusal is not None:
        return None, None, None, refusal
    if not isinstance(data, dict):
        return None, None, None, malformed('the body must be a JSON object {"from": environment, "to": environment}')
    unknown = sorted(set(data) - set(MOVE_FIELDS))
    errors = {field: ["Unknown field."] for field in unknown}
    for field in ("from", "to"):
        if not isinstance(data.get(field), str) or not data[field]:
            errors[field] = ["Give the name of an environment."]
    drop = data.get("drop_database", False)
    if not isinstance(drop, bool):
        errors["drop_database"] = ["Give true or false."]
    if errors:
        return None, None, None, json_response({"errors": errors}, status=400)
    return data["from"], data["to"], drop, None


@api_view("POST", permission=OPERATE_PERMISSION)
def app_move(request, name):
    application, timeout, refusal = api.target(request, name)
    if refusal is not None:
        return refusal
    source, destination, drop, bad = _body(request)
    if bad is not None:
        return bad
    result = _run(application, source, destination, drop, timeout)
    if isinstance(result, HttpResponse):
        return result
    fresh = Application.objects.with_placements().get(pk=application.pk)
    return json_response({"move": move_dict(result.move, result.seconds), "app": api.app_dict(fresh)})


def _run(application, source, destination, drop, timeout):
    try:
        return moves.move(application, source, destination, drop_database=drop, timeout=timeout)
    except moves.MoveRefused as exc:
        return error(str(exc), exc.status, environment=exc.environment, step=None)
    except moves.MoveFailed as exc:
        return error(f"move {application.name} from {source} to {destination} failed: {exc}; it still runs on "
                     f"{source}", 504 if exc.timeout else 409, environment=exc.environment, step=exc.step)
    except lifecycle.OperationInProgress as exc:
        return error(str(exc), 423, environment=None, step=None)
    except redis.RedisError as exc:
        return error(api.REDIS_DOWN.format(error=exc), 503, environment=None, step=None)
