"""Serving hosted applications at /apps/<name>/… on a worker.

``HostedApplicationMiddleware`` is the outermost middleware of a worker. For a request under /apps/<name>/ it

1. reads the application's view from the per-process directory (Redis, cached for at most a second and dropped at
   once when an event says it changed; the last known view kept through Redis outages and losses; never the
   supervisor's database) and answers 404/503 with a page that says why unless the application is placed on
   this environment and running here;
2. otherwise serves it with the hosted site (workers/hosted_urls.py: the hosted admin at admin/, the operator's
   APP_HOSTED_URLCONF beside it), the request mounted at /apps/<name>/:
   the script prefix is set, so every URL the application generates (redirects, admin links, the relative
   STATIC_URL) carries it; the hosted Django apps read and write the application's own database
   (workers.routing.current_database);
3. and on the way out, after the session, CSRF and messages middleware have set their cookies, scopes every cookie
   to Path=/apps/<name>/ and gives Django's own cookies a per-application name (``sessionid_crm``). Paths keep
   browsers from mixing applications; the names keep them apart for clients that ignore paths, and from the
   supervisor's own ``sessionid``/``csrftoken`` (Path=/), which a browser also sends through the access proxy.

It is a middleware rather than ASGI code so that the web server and Django's test client run exactly the same path. A single
instance (APP_MODE unset, single/) hosts its applications with it too, reading their views from its own database
instead of Redis (``exchange.directory.hosted_source``).
"""

import logging
import re
import time
from dataclasses import dataclass
from http.cookies import Morsel
from importlib import import_module

import redis
from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpResponse, HttpResponsePermanentRedirect, JsonResponse
from django.template.loader import render_to_string
from django.urls import get_script_prefix, set_script_prefix

from exchange import contract
from exchange.cookies import framework_cookie_names
from exchange.directory import hosted_lookup

from . import applog, keys, own_state, provisioning
from .routing import current_database

log = logging.getLogger("appsup.worker")

HOSTED_URLCONF = "workers.hosted_urls"
APP_PATH = re.compile(r"^/apps/(?P<name>[^/]*)(?P<rest>/.*)?$", re.DOTALL)
# How an application was addressed by its own host (else by its path, /apps/<name>/).
SUBDOMAIN = "subdomain"
CUSTOM_DOMAIN = "custom-domain"
# Seconds a client is told to wait before retrying an application that is starting.
STARTING_RETRY_AFTER = 5


@dataclass(frozen=True)
class Unavailable:
    """Why a hosted application cannot answer this request, in words (TITLE, MESSAGE, ADVICE: what to do) and as a
    machine code (CODE) for automation."""

    status: int
    code: str
    title: str
    message: str
    state: str = ""
    reason: str = ""
    retry_after: int | None = None
    advice: str = ""


def _start_advice(name, who="An operator can start it"):
    # A worker does not know the supervisor's address, so the page names the place rather than linking to it.
    return f"{who} from the supervisor's admin: Applications → {name} → Start."


def availability(name, view, environment):
    """None when NAME's VIEW says it is served here, else why not."""
    if view is None:
        return Unavailable(404, "unknown_app", "Unknown application", f"There is no application named “{name}”.",
                           advice="Check the address: applications are reached at /apps/<name>/.")
    title = view.config.get("display_name") or name
    if environment not in view.environment_names:
        if _moving_from(view, environment):
            # Switched to the destination, not yet removed here: a request the proxy routed a moment before the
            # switch still reaches this source, and is refused the way it was a moment before, to be sent again.
            return _moving(name, view, environment)
        where = ", ".join(view.environment_names) or "no environment"
        return Unavailable(
            404, "not_on_this_environment", f"{title} is not hosted here",
            f"Application “{name}” is not placed on environment {environment} (it runs on: {where}).",
            advice="Open it through the supervisor (/apps/" + name + "/ there), which sends you to an environment "
            "that hosts it.",
        )
    entry = view.statuses.get(environment)
    state = (entry or {}).get("state")
    if state == contract.RUNNING:
        return None
    if state is None:
        # Nothing reported yet: the application has never been started here, which the supervisor's admin shows as
        # stopped (this worker is the environment, so it is not offline).
        return Unavailable(503, "not_started", f"{title} is stopped",
                           f"This application is stopped on environment {environment}: it has not been started here "
                           "yet.", state=contract.STOPPED, advice=_start_advice(name))
    if state == contract.STARTING:
        return Unavailable(
            503, "starting", f"{title} is starting",
            f"This application is starting on environment {environment}.",
            state=state, retry_after=STARTING_RETRY_AFTER, advice="Try again in a few seconds: this page can simply "
            "be reloaded.",
        )
    if state == contract.STOPPING:
        return Unavailable(503, "stopping", f"{title} is stopping",
                           f"This application is stopping on environment {environment}.", state=state,
                           advice=_start_advice(name, "Once it has stopped, an operator can start it again"))
    if state == contract.STOPPED:
        return Unavailable(503, "stopped", f"{title} is stopped",
                           f"This application is stopped on environment {environment}.", state=state,
                           advice=_start_advice(name))
    if state == contract.ERROR:
        reason = (entry or {}).get("error") or "no reason was reported"
        return Unavailable(503, "error", f"{title} failed",
                           f"This application failed on environment {environment}.", state=state, reason=reason,
                           advice=f"An operator can read the error and its traceback in the supervisor's admin "
                           f"(Applications → {name}), fix the cause and start it again.")
    return Unavailable(503, "unavailable", f"{title} is unavailable",
                       f"This application is in state {state!r} on environment {environment}.", state=state,
                       advice=_start_advice(name))


# Methods that do not write: a moving application keeps answering them from its source.
READ_METHODS = ("GET", "HEAD", "OPTIONS")
MOVING_RETRY_AFTER = 2


def moving_refusal(name, view, environment, method):
    """Why a request that may write is refused here while NAME moves away from ENVIRONMENT (its database is being
    copied to the destination: a write now would be lost), else None. Reads are served until the switch."""
    if not _moving_from(view, environment) or method in READ_METHODS:
        return None
    return _moving(name, view, environment)


def _moving_from(view, environment):
    moving = view.config.get("moving")
    return isinstance(moving, dict) and moving.get("from") == environment


def _moving(name, view, environment):
    moving = view.config["moving"]
    title = view.config.get("display_name") or name
    return Unavailable(
        503, "moving", f"{title} is moving", f"{title} is moving from environment {environment} to "
        f"{moving.get('to')} with its data: it answers reads until it has moved, and refuses changes meanwhile so "
        "that none is lost.", retry_after=MOVING_RETRY_AFTER,
        advice="Send the change again in a few seconds: it will reach the application where it runs then.")


def unavailable_response(request, name, problem):
    environment = settings.ENVIRONMENT_NAME
    if request.get_preferred_type(["text/html", "application/json"]) == "application/json":
        response = JsonResponse(
            {"error": problem.message, "code": problem.code, "app": name, "environment": environment,
             "state": problem.state, "reason": problem.reason, "advice": problem.advice or None},
            status=problem.status,
        )
    else:
        html = render_to_string("workers/unavailable.html", {"problem": problem, "app": name,
                                                               "environment": environment})
        response = HttpResponse(html, status=problem.status)
    response["Cache-Control"] = "no-store"
    if problem.retry_after is not None:
        response["Retry-After"] = str(problem.retry_after)
    return response


def request_host(request):
    """The request's host name, lower-cased, without its port (not validated: nothing is built from it)."""
    host = request.META.get("HTTP_HOST", "").strip().lower()
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if ":" in host else host


def custom_domains(view):
    domains = view.config.get("domains") if view is not None else None
    return [d for d in domains if isinstance(d, str)] if isinstance(domains, list) else []


# -- cookies -----------------------------------------------------------------------------------------------------


def app_cookie_name(base, app):
    return f"{base}_{app}"


def cookies_for_app(cookies, app):
    """The request's cookies as the application expects them: its own ``sessionid_crm`` read as ``sessionid``;
    anybody else's ``sessionid`` (the supervisor's, another application's sent by a client ignoring paths) hidden."""
    names = framework_cookie_names()
    seen = {key: value for key, value in cookies.items() if key not in names}
    for base in names:
        value = cookies.get(app_cookie_name(base, app))
        if value is not None:
            seen[base] = value
    return seen


def scoped_path(path, prefix):
    """A cookie path of the application's world ("/", "/x/", unset) inside its mount PREFIX ("/apps/crm/")."""
    if path.startswith(prefix):
        return path
    if path.startswith("/"):
        return prefix + path[1:]
    return prefix


def scope_cookies(response, app, prefix):
    """Rewrite every cookie RESPONSE sets (or deletes) to Path=PREFIX, framework cookies renamed for APP."""
    cookies = response.cookies
    if not cookies:
        return
    names = framework_cookie_names()
    renamed = []
    for key in list(cookies):
        morsel = cookies[key]
        morsel["path"] = scoped_path(morsel["path"], prefix)
        if key in names:
            own = Morsel()
            own.set(app_cookie_name(key, app), morsel.value, morsel.coded_value)
            own.update(morsel)
            del cookies[key]
            renamed.append(own)
    for morsel in renamed:
        cookies[morsel.key] = morsel


# -- middleware --------------------------------------------------------------------------------------------------


class HostedApplicationMiddleware:
    """Outermost middleware of a worker or a single instance: /apps/<name>/… goes to the hosted application (see
    module docstring)."""

    def __init__(self, get_response):
        if settings.APP_MODE == "supervisor":
            raise MiddlewareNotUsed("a supervisor forwards to its workers (proxy/), hosting no application itself")
        # Now, at start: an APP_HOSTED_URLCONF without urlpatterns, or whose views do not import, stops the worker web
        # (a ConfigError is reported as one, exit status 2) instead of failing every request of every application.
        import_module(HOSTED_URLCONF)
        self.get_response = get_response

    def __call__(self, request):
        name, rest, own_host = self.addressed(request)
        if name is None:
            return self.get_response(request)
        if not contract.NAME_RE.match(name) or name in contract.RESERVED_APP_NAMES:
            return unavailable_response(request, name, availability(name, None, settings.ENVIRONMENT_NAME))
        if rest is None:  # /apps/crm: relative URLs only work below /apps/crm/
            query = request.META.get("QUERY_STRING", "")
            return HttpResponsePermanentRedirect(f"{request.path}/" + (f"?{query}" if query else ""))
        try:
            view = hosted_lookup(name)
        except redis.RedisError as exc:  # only when this process has never read the application
            log.warning("cannot read application %s from Redis: %s", name, exc)
            return unavailable_response(request, name, Unavailable(
                503, "configuration_unavailable", "Configuration unavailable",
                "This worker cannot read the applications' configuration (Redis is unreachable).",
                retry_after=STARTING_RETRY_AFTER,
                advice="Try again in a few seconds. If it lasts, an operator should check this worker's Redis "
                "(APP_SUPERVISOR_REDIS_URL; its /readyz says what does not answer).",
            ))
        if own_host == CUSTOM_DOMAIN and (view is None or request_host(request) not in custom_domains(view)):
            view = None  # a host this application does not claim: as unknown as a name nobody has
        if settings.APP_MODE == "worker":
            view = own_state.overlaid(view, settings.ENVIRONMENT_NAME)
        if view is None or not applog.enabled():  # no such application: nothing to log it under
            return self.answer(request, name, view, rest, own_host)
        started = time.perf_counter()
        request.hosted_error = None
        response = self.answer(request, name, view, rest, own_host)
        applog.recorder.note(name, request.method, rest, response.status_code, time.perf_counter() - started,
                             request.hosted_error)
        return response

    def answer(self, request, name, view, rest, own_host=None):
        problem = availability(name, view, settings.ENVIRONMENT_NAME) or moving_refusal(
            name, view, settings.ENVIRONMENT_NAME, request.method)
        if problem is not None:
            return unavailable_response(request, name, problem)
        return self.serve(request, view, rest, own_host=bool(own_host))

    @staticmethod
    def addressed(request):
        """(application name, its path, how it was addressed) for a hosted application's request, else (None, ...).

        With APP_APPS_DOMAIN, an application's own host (``crm.apps.example.com``, or a custom domain of the
        application that the X-Appsup-App header names: the supervisor's proxy and the nginx export set it) serves
        the whole path as the application's, mounted at /; otherwise /apps/<name>/… on any host."""
        if settings.APP_APPS_DOMAIN:
            host = request_host(request)
            suffix = "." + settings.APP_APPS_DOMAIN
            if host.endswith(suffix) and "." not in host[:-len(suffix)]:
                return host[:-len(suffix)], request.path_info, SUBDOMAIN
            claimed = request.META.get("HTTP_X_APPSUP_APP", "")
            if claimed and host:
                return claimed, request.path_info, CUSTOM_DOMAIN
        match = APP_PATH.match(request.path_info)
        if match is None or not match["name"]:  # /apps/ itself names no application: the worker's own 404
            return None, None, None
        return match["name"], match["rest"], None

    def serve(self, request, view, rest, own_host=False):
        name = view.name
        alias = provisioning.connect(name)
        outer_prefix = get_script_prefix()
        # On its own host the application sees its paths as they are; under the supervisor's, below /apps/<name>/.
        prefix = outer_prefix if own_host else f"{outer_prefix}apps/{name}/"
        request.path_info = rest
        request.META["PATH_INFO"] = rest
        request.META["SCRIPT_NAME"] = prefix[:-1]
        request.urlconf = HOSTED_URLCONF
        request.hosted_app = view
        request.COOKIES = cookies_for_app(request.COOKIES, name)
        token = current_database.set(alias)
        key_token = keys.current_application.set(name)
        set_script_prefix(prefix)
        try:
            response = self.get_response(request)
        finally:
            set_script_prefix(outer_prefix)
            keys.current_application.reset(key_token)
            current_database.reset(token)
        scope_cookies(response, name, prefix)
        return response
