"""JSON API: the applications (docs/architecture.md, "JSON API"). Authentication, 401/403/405 and the JSON envelope are
api.auth's; the work is apps.forms' (create) and apps.lifecycle's (start, stop, restart, remove).

APP = ``{"name", "display_name", "environments": [names in start order], "desired_state",
"statuses": {environment: {"state", "error", "at"}}, "concurrency", "request_timeout"}``; ``state`` is "unknown"
while the environment is offline, ``error`` is null when there is none, ``at`` is ISO 8601 or null;
``concurrency`` and ``request_timeout`` are the application's own share of each worker web process (workers.gate),
null for the worker's default. A create body may give them (integers, or null).

=====================================  ====================================================================
call                                   answers
=====================================  ====================================================================
``GET /api/apps/``                     200 ``{"apps": [APP, …], "next": URL or null}``: ``?limit=`` (1..1000,
                                       default 500) apps ordered by name, from ``?after=<name>``; 400 for a
                                       bad limit or cursor. Two queries whatever the number of apps
``GET /api/apps/<name>/``              200 APP; 404 ``{"error"}`` for an unknown application
``POST /api/apps/``                    201 APP (and ``Location``); 400 ``{"errors": {field: [messages]}}``,
                                       ``"__all__"`` when the body is not a JSON object (or too deeply
                                       nested), a field's message when its JSON type is wrong (the four
                                       strings must be strings, ``environments`` a list of strings);
                                       413 past DATA_UPLOAD_MAX_MEMORY_SIZE; 415 if not application/json
``POST /api/apps/<name>/start``        200 APP once every environment answered; 202 ``{"message",
(also ``stop``, ``restart``)           "environment", "pending", "app"}`` when an environment is offline:
                                       recorded, the controller carries it out there once it is back, once
                                       (``environment`` names the one it waits for); on failure
                                       ``{"error", "environment"}``, see below. ``?timeout=`` seconds
                                       (default settings.APP_COMMAND_TIMEOUT) bounds the whole operation
``PATCH /api/apps/<name>/``            200 APP once changed (apps.placements: ``environments`` in start
                                       order, ``drop_database`` for those left, ``display_name``,
                                       ``concurrency``, ``request_timeout``); 202 APP with ``pending``
                                       when an environment is offline (the controller completes it); 400
                                       ``{"errors"}`` as for a create, and for a field that cannot change;
                                       failures as below, with ``pending`` (the change is kept)
``DELETE /api/apps/<name>/``           204 once it is stopped everywhere and removed; failures as below.
                                       Its databases are kept unless ``?drop_database=true``; with
                                       ``?force=true`` its offline environments are sent nothing (they will
                                       never answer) and it is removed all the same
=====================================  ====================================================================

Failures of start/stop/restart/delete, all ``{"error": message, "environment": name or null}``:

* 400 — ``?timeout=`` is not a positive number of seconds (at most lifecycle.MAX_TIMEOUT), or
  ``?drop_database=`` or ``?force=`` is not true/false; environment null;
* 404 — no such application; environment null;
* 409 — the command failed on an environment (error state, refusal, the worker went away while running it), or
  a delete without ``force`` found one offline (nothing is sent); environment names it;
* 423 — another start/stop/restart/delete of this application is in progress (lifecycle.OperationInProgress);
  environment null; retry once it ends;
* 503 — Redis is unavailable, so no command can be sent; environment null;
* 504 — an environment did not answer before the timeout; environment names it, and the message says whether the
  command was cancelled (still queued: it will never run) or is still running there (its outcome is recorded when
  it ends).

Reads keep answering from the database when Redis is unavailable: 200 with an ``X-Supervisor-Warning`` header.
"""

import math

import redis
from django.conf import settings
from django.db import IntegrityError
from django.http import HttpResponse
from django.utils import timezone

from api.auth import (
    api_view,
    error,
    json_response,
    malformed,
    page_request,
    paged,
    read_json,
    with_warning,
)
from exchange import contract
from exchange.contract import NAME_RE
from fleet import pending as pending_migrations

from . import lifecycle, listing, placements, refresh
from .forms import ApplicationChangeForm, ApplicationCreateForm, OrderedEnvironmentsField, publish_quietly
from .models import OPERATE_PERMISSION, Application

CREATE_FIELDS = ("name", "display_name", "environments", "admin_username", "admin_password", "concurrency",
                 "request_timeout")
STRING_FIELDS = ("name", "display_name", "admin_username", "admin_password")
INTEGER_FIELDS = ("concurrency", "request_timeout")
NOT_A_STRING = "Give a string."
NOT_AN_INTEGER = "Give a whole number, or null for the worker's default."
NOT_UNICODE = "Give valid Unicode text: this string holds a lone surrogate (\\ud800-\\udfff), which cannot be stored."
REDIS_DOWN = "Redis is unavailable ({error}); no command can be sent until it is back"


# -- serialization -------------------------------------------------------------------------------------------


def app_dict(application, now=None):
    """APP for an application whose placements (and their environments) are loaded or prefetched."""
    now = now or timezone.now()
    placed = [(p.environment.name, listing.status_dict(p.display_state(now), p.error, p.state_at))
              for p in application.ordered_placements()]
    return listing.app_dict(application.name, application.display_name, application.desired_state, placed,
                            application.concurrency, application.request_timeout, application.domain_names())


def _load(name):
    if not NAME_RE.fullmatch(name):
        # No application can have it, and some would not even reach the query: PostgreSQL refuses a NUL (500).
        return None
    return Application.objects.with_placements().filter(name=name).first()


def _unknown(name):
    return error(f"no application named {name!r}", 404, environment=None)


def _fresh_app_response(application, status=200):
    """APP as it is now in the database (the lifecycle has just updated its placements)."""
    return json_response(app_dict(Application.objects.with_placements().get(pk=application.pk)), status=status)


# -- reads and create ----------------------------------------------------------------------------------------


@api_view("GET", "POST", permission={"GET": "apps.view_application", "POST": "apps.add_application"})
def app_collection(request):
    if request.method == "POST":
        return _create(request)
    page, bad = page_request(request)
    if bad is not None:
        return bad
    now = timezone.now()
    return with_warning(paged(request, page, "apps", listing.app_page(page, now)), refresh.staleness_warning(now))


def typing_errors(data):
    """{field: [message]} for each field of DATA whose JSON type is wrong. The form would take anything and
    store its str() (a number as its digits, a list as its repr): the API takes strings and lists of strings,
    and nothing else."""
    errors = {}
    for field in STRING_FIELDS:
        if field in data:
            problem = _text_problem(data[field])
            if problem:
                errors[field] = [problem]
    for field in INTEGER_FIELDS:
        value = data.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            errors[field] = [NOT_AN_INTEGER]
    if "environments" in data:
        names = data["environments"]
        # The form would also take "a,b"; the API takes a list and nothing else.
        if not isinstance(names, list) or any(_text_problem(name) for name in names):
            errors["environments"] = [OrderedEnvironmentsField.default_error_messages["invalid_list"]]
    return errors


def _text_problem(value):
    if not isinstance(value, str):
        return NOT_A_STRING
    try:  # JSON's \u escapes can name half a surrogate pair, which no database (nor UTF-8) takes
        value.encode("utf-8")
    except UnicodeEncodeError:
        return NOT_UNICODE
    return None


def _create(request):
    data, refusal = read_json(request)
    if refusal is not None:
        return refusal
    if not isinstance(data, dict):
        return malformed(f"the body must be a JSON object with {', '.join(CREATE_FIELDS)}")
    mistyped = typing_errors(data)
    # null is the default: the form takes it as an empty field.
    data = {field: "" if field in INTEGER_FIELDS and value is None else value
            for field, value in data.items() if field not in mistyped}
    # Validate against the environments registered right now, not the last page anyone loaded.
    warning = refresh.refresh()
    form = ApplicationCreateForm(data)
    if form.is_valid() and not mistyped:
        try:
            application = form.save()
        except IntegrityError:  # the same name created concurrently, between validation and insert
            return json_response({"errors": {"name": [f"An application named {data['name']!r} already exists."]}},
                                 status=400)
        response = _fresh_app_response(application, status=201)
        response["Location"] = f"/api/apps/{application.name}/"
        return with_warning(response, warning)
    errors = {field: list(messages) for field, messages in form.errors.items()}
    errors.update(mistyped)  # rather than the form's "required" for a field it was not given
    return with_warning(json_response({"errors": errors}, status=400), warning)


@api_view("GET", "PATCH", "DELETE", permission={"GET": "apps.view_application", "PATCH": "apps.change_application",
                                          "DELETE": "apps.delete_application"})
def app_detail(request, name):
    if request.method == "DELETE":
        return _remove(request, name)
    if request.method == "PATCH":
        return _change(request, name)
    application = _load(name)
    if application is None:
        return _unknown(name)
    body = dict(app_dict(application), pending_migrations=pending_migrations.for_app(application))
    return with_warning(json_response(body), refresh.staleness_warning())


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
        if step.kind == lifecycle.OFFLINE:
            return _waiting(outcome, application, step, extra["pending"])
    elif outcome.command == contract.REMOVE and step.kind == lifecycle.OFFLINE:
        detail += (f"; if {step.environment} will never answer, DELETE /api/apps/{application.name}?force=true "
                   "removes the application without it (what it left there is not reachable)")
    return error(
        f"{outcome.command} {application.name} failed on {step.environment}: {detail}",
        _failure_status(step),
        environment=step.environment,
        **extra,
    )


def _waiting(outcome, application, step, pending):
    """202: the command is recorded and waits for an offline environment, which the controller completes."""
    return json_response({
        "message": f"{outcome.command} {application.name} waits for {', '.join(pending['waiting_for'])}: "
                   f"{step.error}; the controller carries it out there once it is back online, once",
        "environment": step.environment,
        "pending": pending,
        "app": app_dict(Application.objects.with_placements().get(pk=application.pk)),
    }, status=202)


def target(request, name):
    """``(application, timeout, None)`` for an operation on NAME, or ``(None, None, the 404 or 400 answer)``."""
    application = _load(name)
    if application is None:
        return None, None, _unknown(name)
    timeout, bad = _timeout(request)
    if bad is not None:
        return None, None, bad
    return application, timeout, None


def _operate(request, name, work):
    """Run WORK(application, timeout) -> Outcome, mapping every way it can fail to its answer."""
    application, timeout, refusal = target(request, name)
    if refusal is not None:
        return refusal
    try:
        outcome = work(application, timeout)
    except lifecycle.OperationInProgress as exc:
        return error(str(exc), 423, environment=None)
    except redis.RedisError as exc:
        return error(REDIS_DOWN.format(error=exc), 503, environment=None)
    if not outcome.ok:
        return _failure(outcome, application)
    return application


@api_view("POST", permission=OPERATE_PERMISSION)
def app_command(request, name, command):
    result = _operate(request, name, lambda app, timeout: lifecycle.run(app, command, timeout=timeout))
    if isinstance(result, HttpResponse):
        return result
    return _fresh_app_response(result)


TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no", "")


def flag(request, name):
    """(True/False, None) from ?NAME=true|false (absent: False), or (None, the 400 response)."""
    raw = request.GET.get(name, "")
    if raw.lower() not in TRUE + FALSE:
        return None, error(f"{name}={raw!r} is not valid: give true or false", 400, environment=None)
    return raw.lower() in TRUE, None


def _remove(request, name):
    drop, bad = flag(request, "drop_database")
    if bad is not None:
        return bad
    force, bad = flag(request, "force")
    if bad is not None:
        return bad
    result = _operate(request, name, lambda app, timeout: lifecycle.remove(app, drop_database=drop, timeout=timeout,
                                                                            force=force))
    if isinstance(result, HttpResponse):
        return result
    return HttpResponse(status=204)


# -- change --------------------------------------------------------------------------------------------------

CHANGE_FIELDS = ("environments", "drop_database", "display_name", "concurrency", "request_timeout")
NOT_A_BOOLEAN = "Give true or false."


def _change_refusals(data):
    """{field: [message]} for the fields of DATA a change does not take, or whose JSON type is wrong."""
    errors = {}
    for name in data:
        if name in CHANGE_FIELDS:
            continue
        if name in CREATE_FIELDS:
            errors[name] = [f"{name} cannot be changed once the application exists; a change takes "
                            f"{', '.join(CHANGE_FIELDS)}."]
        else:
            errors[name] = [f"Unknown field; a change takes {', '.join(CHANGE_FIELDS)}."]
    errors.update(typing_errors({k: v for k, v in data.items() if k in CHANGE_FIELDS}))
    if "drop_database" in data and not isinstance(data["drop_database"], bool):
        errors["drop_database"] = [NOT_A_BOOLEAN]
    return errors


def _change(request, name):
    application, timeout, refusal = target(request, name)
    if refusal is not None:
        return refusal
    data, refusal = read_json(request)
    if refusal is not None:
        return refusal
    if not isinstance(data, dict):
        return malformed(f"the body must be a JSON object with any of {', '.join(CHANGE_FIELDS)}")
    refused = _change_refusals(data)
    if refused:
        return json_response({"errors": refused}, status=400)
    # A PATCH changes what it names; the form sees the rest as it is.
    given = {
        "display_name": application.display_name,
        "concurrency": application.concurrency,
        "request_timeout": application.request_timeout,
        "environments": application.environment_names(),
        **data,
    }
    given = {field: "" if field in INTEGER_FIELDS and value is None else value for field, value in given.items()}
    warning = refresh.refresh()  # validated against the environments registered now
    form = ApplicationChangeForm(given, instance=application)
    if not form.is_valid():
        errors = {field: list(messages) for field, messages in form.errors.items()}
        return with_warning(json_response({"errors": errors}, status=400), warning)
    names = form.new_environments()
    change = None
    if names is not None:
        try:
            change = placements.change_environments(
                application, names, drop_database=form.cleaned_data["drop_database"], timeout=timeout)
        except lifecycle.OperationInProgress as exc:
            return error(str(exc), 423, environment=None)
        except redis.RedisError as exc:
            return error(REDIS_DOWN.format(error=exc), 503, environment=None)
        except Application.DoesNotExist:  # deleted while this waited for its lock
            return _unknown(name)
    fields = [field for field in form.changed_data if field in ApplicationChangeForm.Meta.fields]
    if fields:
        # Only what changed: the rest of this instance may be older than the database (the controller's progress).
        form.instance.save(update_fields=[*fields, "updated_at"])
        publish_quietly(application.pk)  # the display name and the share are part of what workers read
    return with_warning(_change_response(application, change), warning)


def _change_response(application, change):
    """200 APP when done; 202 APP with "pending" when an environment is offline; 409/504 naming where a command
    failed (the change is kept: the controller tries again)."""
    if change is None or (change.failure is None and not change.waiting_for):
        return _fresh_app_response(application)
    body = app_dict(Application.objects.with_placements().get(pk=application.pk))
    failure = change.failure
    pending = {
        "added": change.added,
        "removed": change.removed,
        "waiting_for": change.waiting_for,
        "message": change.pending_message() or f"the controller tries again on {failure.environment}",
    }
    if failure is None:
        return json_response({**body, "pending": pending}, status=202)
    return error(
        f"changing the environments of {application.name} failed on {failure.environment}: "
        f"{failure.error or f'it ended {failure.state}'}; the change is recorded and the controller tries again",
        _failure_status(failure), environment=failure.environment, pending=pending, app=body)
