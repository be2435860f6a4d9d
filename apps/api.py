"""JSON API: the applications (DESIGN.md, "JSON API"). Authentication, 401/403/405 and the JSON envelope are
supervisor_project.api_auth's; the work is apps.forms' (create) and apps.lifecycle's (start, stop, restart, remove).

APP = ``{"name", "display_name", "environments": [names in start order], "desired_state",
"statuses": {environment: {"state", "error", "at"}}}``; ``state`` is "unknown" while the environment is offline,
``error`` is null when there is none, ``at`` is ISO 8601 or null.

=====================================  ====================================================================
call                                   answers
=====================================  ====================================================================
``GET /api/apps/``                     200 ``{"apps": [APP, …]}`` (apps.listing: a constant number of queries)
``GET /api/apps/<name>/``              200 APP; 404 ``{"error"}`` for an unknown application
``POST /api/apps/``                    201 APP (and ``Location``); 400 ``{"errors": {field: [messages]}}``,
                                       ``"__all__"`` when the body is not a JSON object
``POST /api/apps/<name>/start``        200 APP once every environment answered; on failure
(also ``stop``, ``restart``)           ``{"error", "environment"}``, see below. ``?timeout=`` seconds
                                       (default settings.APP_COMMAND_TIMEOUT) bounds the whole operation
``DELETE /api/apps/<name>/``           204 once it is stopped everywhere and removed; failures as below.
                                       Its databases are kept unless ``?drop_database=true``
=====================================  ====================================================================

Failures of start/stop/restart/delete, all ``{"error": message, "environment": name or null}``:

* 400 — ``?timeout=`` is not a positive number of seconds (at most lifecycle.MAX_TIMEOUT), or
  ``?drop_database=`` is not true/false; environment null;
* 404 — no such application; environment null;
* 409 — an environment is offline (nothing is sent to it, nor to the ones after it on a start), or the command
  failed there (error state, refusal, the worker went away while running it); environment names it;
* 423 — another start/stop/restart/delete of this application is in progress (lifecycle.OperationInProgress);
  environment null; retry once it ends;
* 503 — Redis is unavailable, so no command can be sent; environment null;
* 504 — an environment did not answer before the timeout (a job still queued is cancelled); environment names it.

Reads keep answering from the database when Redis is unavailable: 200 with an ``X-Supervisor-Warning`` header.
"""

import json
import math

import redis
from django.conf import settings
from django.db import IntegrityError
from django.http import HttpResponse
from django.utils import timezone

from supervisor_project.api_auth import api_view, error, json_response, with_warning

from . import lifecycle, listing, refresh
from .forms import ApplicationCreateForm
from .models import Application

CREATE_FIELDS = ("name", "display_name", "environments", "admin_username", "admin_password")
REDIS_DOWN = "Redis is unavailable ({error}); no command can be sent until it is back"


# -- serialization -------------------------------------------------------------------------------------------


def app_dict(application, now=None):
    """APP for an application whose placements (and their environments) are loaded or prefetched."""
    now = now or timezone.now()
    placed = [(p.environment.name, listing.status_dict(p.display_state(now), p.error, p.state_at))
              for p in application.ordered_placements()]
    return listing.app_dict(application.name, application.display_name, application.desired_state, placed)


def _load(name):
    return Application.objects.with_placements().filter(name=name).first()


def _unknown(name):
    return error(f"no application named {name!r}", 404, environment=None)


def _fresh_app_response(application, status=200):
    """APP as it is now in the database (the lifecycle has just updated its placements)."""
    return json_response(app_dict(Application.objects.with_placements().get(pk=application.pk)), status=status)


# -- reads and create ----------------------------------------------------------------------------------------


@api_view("GET", "POST")
def app_collection(request):
    if request.method == "POST":
        return _create(request)
    apps, warning = listing.app_dicts()
    return with_warning(json_response({"apps": apps}), warning)


def _create(request):
    try:
        data = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        return json_response({"errors": {"__all__": [f"the body is not valid JSON: {exc}"]}}, status=400)
    if not isinstance(data, dict):
        return json_response(
            {"errors": {"__all__": [f"the body must be a JSON object with {', '.join(CREATE_FIELDS)}"]}}, status=400
        )
    environments = data.get("environments")
    not_a_list = environments is not None and not isinstance(environments, list)
    if not_a_list:  # the form would also take "a,b"; the API takes a list and nothing else
        data = {k: v for k, v in data.items() if k != "environments"}
    # Validate against the environments registered right now, not the last page anyone loaded.
    warning = refresh.refresh()
    form = ApplicationCreateForm(data)
    if form.is_valid() and not not_a_list:
        try:
            application = form.save()
        except IntegrityError:  # the same name created concurrently, between validation and insert
            return json_response({"errors": {"name": [f"An application named {data['name']!r} already exists."]}},
                                 status=400)
        response = _fresh_app_response(application, status=201)
        response["Location"] = f"/api/apps/{application.name}/"
        return with_warning(response, warning)
    errors = {field: list(messages) for field, messages in form.errors.items()}
    if not_a_list:
        errors["environments"] = [form.fields["environments"].error_messages["invalid_list"]]
    return with_warning(json_response({"errors": errors}, status=400), warning)


@api_view("GET", "DELETE")
def app_detail(request, name):
    if request.method == "DELETE":
        return _remove(request, name)
    application = _load(name)
    if application is None:
        return _unknown(name)
    return with_warning(json_response(app_dict(application)), refresh.staleness_warning())


# -- lifecycle -----------------------------------------------------------------------------------------------


def _timeout(request):
    """(seconds, None) from ?timeout=, or (None, the 400 response)."""
    raw = request.GET.get("timeout")
    if raw is None or raw == "":
        return settings.APP_COMMAND_TIMEOUT, None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0 or seconds > lifecycle.MAX_TIMEOUT:
        return None, error(
            f"timeout={raw!r} is not valid: give a number of seconds above 0 and at most {lifecycle.MAX_TIMEOUT}",
            400,
            environment=None,
        )
    return seconds, None


def _failure_status(step):
    return 504 if step.kind == lifecycle.TIMEOUT else 409


def _failure(outcome, application):
    step = outcome.failure
    detail = step.error or f"it ended {step.state}"
    extra = {}
    waiting = outcome.waiting_for
    if waiting and outcome.command in lifecycle.DESIRED:
        # The intent is kept: say plainly what ran and what waits, and for what.
        desired = lifecycle.DESIRED[outcome.command]
        done = [s.environment for s in outcome.steps if s.ok]
        extra["pending"] = {
            "desired_state": desired,
            "done": done,
            "waiting_for": waiting,
            "message": f"{application.name} stays desired {desired}: the controller completes the "
                       f"{outcome.command} on {', '.join(waiting)} once it is back online",
        }
    return error(
        f"{outcome.command} {application.name} failed on {step.environment}: {detail}",
        _failure_status(step),
        environment=step.environment,
        **extra,
    )


def _operate(request, name, work):
    """Run WORK(application, timeout) -> Outcome, mapping every way it can fail to its answer."""
    application = _load(name)
    if application is None:
        return _unknown(name)
    timeout, bad = _timeout(request)
    if bad is not None:
        return bad
    try:
        outcome = work(application, timeout)
    except lifecycle.OperationInProgress as exc:
        return error(str(exc), 423, environment=None)
    except redis.RedisError as exc:
        return error(REDIS_DOWN.format(error=exc), 503, environment=None)
    if not outcome.ok:
        return _failure(outcome, application)
    return application


@api_view("POST")
def app_command(request, name, command):
    result = _operate(request, name, lambda app, timeout: lifecycle.run(app, command, timeout=timeout))
    if isinstance(result, HttpResponse):
        return result
    return _fresh_app_response(result)


TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no", "")


def _remove(request, name):
    raw = request.GET.get("drop_database", "")
    if raw.lower() not in TRUE + FALSE:
        return error(f"drop_database={raw!r} is not valid: give true or false", 400, environment=None)
    drop = raw.lower() in TRUE
    result = _operate(request, name, lambda app, timeout: lifecycle.remove(app, drop_database=drop, timeout=timeout))
    if isinstance(result, HttpResponse):
        return result
    return HttpResponse(status=204)
