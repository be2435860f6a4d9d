"""Authentication and the common envelope of the JSON API (docs/architecture.md, "JSON API").

A request is let in by either

* ``Authorization: Bearer <token>`` equal to ``settings.SUPERVISOR_API_TOKEN``, the bootstrap token (compared in
  constant time; an empty configured token never matches, so an unset variable disables it instead of opening it),
* ``Authorization: Bearer <token>`` of a per-user API token (apitokens: created in the admin, not expired, not
  revoked, its user active staff), acting as its user with the user's permissions, or
* a session of an active staff user; Django's CSRF check then applies to unsafe methods, as it would to a form.

An ``Authorization`` header, when present, decides alone: a wrong token is refused even alongside a session.

Answers, always JSON (never an HTML error page):

* 401 ``{"error": ...}`` with ``WWW-Authenticate: Bearer`` — credentials missing, or wrong; the message says which;
* 403 ``{"error": ..., "permission": ...}`` — a staff session whose user lacks the Django model permission the
  endpoint declares for the method (``permission``: the missing one, e.g. ``apps.add_application``), checked as the
  admin checks it (``user.has_perm``: superusers have all; a view permission is also granted by the change one);
* 403 ``{"error": ...}`` — a staff session whose unsafe request failed the CSRF check;
* 405 ``{"error": ...}`` with ``Allow`` — a method the endpoint does not take;
* 413 ``{"error": ...}`` — a body past ``settings.DATA_UPLOAD_MAX_MEMORY_SIZE`` (Django's 2.5 MB by default);
* 415 ``{"error": ...}`` — a POST whose body is not ``application/json`` (``; charset=utf-8`` is fine). A POST
  without a body (start, stop, restart) may name no Content-Type at all, so a bare ``curl -X POST`` works;
  an empty create then answers 400, as an empty JSON body would;
* 500 ``{"error": ...}`` — an unexpected exception (logged with its traceback).

``read_json`` reads a body for the views that take one: 400 ``{"errors": {"__all__": [...]}}`` when it is not
UTF-8 JSON, or nests arrays and objects deeper than ``MAX_JSON_DEPTH``. Lists are paged by ``page_request``
and ``paged``: ``?limit=`` (1..``MAX_PAGE_SIZE``, default ``DEFAULT_PAGE_SIZE``) items ordered by name,
``?after=`` the last name of the previous page, and ``"next"``: the URL of the next page, or null.

Reads that had to answer from the database mirror because Redis is unavailable still answer 200, with the reason
in an ``X-Supervisor-Warning`` header.

Every endpoint declares the permission each method needs: ``api_view("GET", "POST", permission={"GET":
VIEW_APPLICATION, "POST": "apps.add_application"})``, one name for all methods, a tuple of names all needed, or
``NO_PERMISSION`` (any authenticated caller). The bootstrap token (``SUPERVISOR_API_TOKEN``) acts as a superuser.

Views are wrapped with ``api_view("GET", "POST", …)``; ``json_response``, ``error`` and ``with_warning`` build
answers.
"""

import functools
import hmac
import json
import logging
import re
from itertools import accumulate

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

log = logging.getLogger("appsup.api")

SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE")
WARNING_HEADER = "X-Supervisor-Warning"

MISSING = (
    "authentication required: send 'Authorization: Bearer <SUPERVISOR_API_TOKEN>' or log in to the admin as staff"
)
WRONG_TOKEN = ("invalid bearer token: it is neither SUPERVISOR_API_TOKEN nor a usable API token (unknown, expired, "
               "revoked, or its user is no longer active staff)")
NO_TOKEN_CONFIGURED = ("bearer token refused: SUPERVISOR_API_TOKEN is not set on this supervisor, and this is no "
                       "per-user API token (those start with appsup_)")
BAD_SCHEME = "unsupported Authorization header: use 'Authorization: Bearer <token>'"
NOT_STAFF = "your session's user is not active staff; log in to the admin as staff or use a bearer token"
MISSING_PERMISSION = (
    "permission denied: {method} {path} needs the {permission} permission, which {user} does not have; "
    "an administrator grants it in the admin (Users or Groups)"
)
# An endpoint any authenticated caller may use (the 404 of unknown paths).
NO_PERMISSION = ()


def json_response(data, status=200, **kwargs):
    # Lists and null are answers too (never at top level today, but harmless).
    return JsonResponse(data, status=status, safe=False, **kwargs)


def iso(moment):
    """ISO 8601 for a datetime, or None."""
    return None if moment is None else moment.isoformat()


def with_warning(response, warning):
    """Attach a degraded-service WARNING (e.g. from apps.refresh) as the X-Supervisor-Warning header."""
    if warning:
        response[WARNING_HEADER] = " ".join(str(warning).split())  # one line: headers take no newlines
    return response


def error(message, status, **extra):
    return json_response({"error": message, **extra}, status=status)


def unauthorized(message, invalid_token=False):
    response = error(message, 401)
    # RFC 6750: no error code when no credentials were sent; invalid_token when they were wrong.
    response["WWW-Authenticate"] = 'Bearer error="invalid_token"' if invalid_token else "Bearer"
    return response


class _CsrfCheck(CsrfViewMiddleware):
    """Django's CSRF check, run on demand; answers the reason for a rejection instead of an HTML page."""

    def _reject(self, request, reason):
        return reason


def csrf_failure(request):
    """The reason the CSRF check rejects REQUEST, or None when it passes."""
    check = _CsrfCheck(lambda req: None)
    check.process_request(request)
    return check.process_view(request, None, (), {})


def bearer_token(request):
    """(present, token): whether an Authorization header was sent, and its bearer token (None if not Bearer)."""
    header = request.META.get("HTTP_AUTHORIZATION")
    if header is None:
        return False, None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return True, None
    return True, token.strip()


def token_matches(token):
    expected = settings.SUPERVISOR_API_TOKEN or ""
    if not expected:
        return False
    return hmac.compare_digest(token.encode(), expected.encode())


def granted(user, permission):
    """Whether USER holds PERMISSION as the admin sees it: its changelist and change pages are open to a user with
    the view or the change permission (ModelAdmin.has_view_permission)."""
    if user.has_perm(permission):
        return True
    app_label, _, codename = permission.partition(".")
    return codename.startswith("view_") and user.has_perm(f"{app_label}.change_{codename[len('view_'):]}")


def missing_permission(request, needed):
    """The first of the permission names NEEDED that REQUEST's caller lacks, or None. The bootstrap token holds all."""
    if request.api_auth not in ("session", "user-token"):
        return None
    return next((permission for permission in needed if not granted(request.user, permission)), None)


def _needed(permission, method):
    """The permission names METHOD needs under an endpoint's PERMISSION declaration, as a tuple."""
    if isinstance(permission, dict):
        permission = permission[method]
    return (permission,) if isinstance(permission, str) else tuple(permission)


def forbidden(request, permission):
    return error(MISSING_PERMISSION.format(method=request.method, path=request.path, permission=permission,
                                           user=request.user.get_username()), 403, permission=permission)


def token_of(token):
    """"token" for the bootstrap token, the usable per-user ApiToken TOKEN is (its use recorded) when its user is
    active staff, or the refusal's message."""
    from apitokens.models import PREFIX, ApiToken

    if token_matches(token):
        return "token"
    api_token = ApiToken.objects.for_token(token)
    if api_token is not None and api_token.user.is_staff:
        api_token.mark_used()
        return api_token
    if not settings.SUPERVISOR_API_TOKEN and not token.startswith(PREFIX):
        return NO_TOKEN_CONFIGURED
    return WRONG_TOKEN


def token_holder(token):
    """"token" for the bootstrap token, the active staff user of a usable per-user TOKEN (its use recorded), or
    the refusal's message."""
    holder = token_of(token)
    return holder if isinstance(holder, str) else holder.user


def authenticate(request):
    """None when REQUEST may use the API, else the JSON response refusing it."""
    present, token = bearer_token(request)
    if present:
        if token is None:
            return unauthorized(BAD_SCHEME, invalid_token=True)
        holder = token_of(token)
        if isinstance(holder, str) and holder != "token":
            return unauthorized(holder, invalid_token=True)
        if holder == "token":
            request.api_auth = "token"
        else:
            request.user, request.api_token = holder.user, holder  # the token names the audit log's actor
            request.api_auth = "user-token"
        return None
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return unauthorized(MISSING)
    if not (user.is_active and user.is_staff):
        return unauthorized(NOT_STAFF)
    request.api_auth = "session"
    return None


# -- request bodies ------------------------------------------------------------------------------------------

JSON_TYPE = "application/json"
UTF8 = ("utf-8", "utf8")
# No request of this API nests deeper than 2 (an object holding a list); 20 leaves room and costs nothing.
MAX_JSON_DEPTH = 20
TOO_LARGE = "the body is larger than the {limit} bytes this API accepts (DATA_UPLOAD_MAX_MEMORY_SIZE)"
NOT_JSON_TYPE = "send the body as application/json (Content-Type: application/json), not {given}"
NOT_UTF8 = "send JSON as UTF-8: charset={charset} is not accepted"

# A JSON string (escapes included), and whatever is not a bracket once strings are gone.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def too_large():
    return error(TOO_LARGE.format(limit=settings.DATA_UPLOAD_MAX_MEMORY_SIZE), 413)


def content_length(request):
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:  # the server would not pass one on; if it did, the body's actual size still counts
        return 0


def has_body(request):
    return content_length(request) > 0 or "HTTP_TRANSFER_ENCODING" in request.META


def content_type_refusal(request):
    """The 415 for a request that carries a body, or names a Content-Type, other than JSON; else None. A POST
    with no body at all (start, stop, restart) need name no type, so a bare ``curl -X POST`` works."""
    given = request.META.get("CONTENT_TYPE", "").strip()
    if not given and not has_body(request):
        return None
    if request.content_type.lower() != JSON_TYPE:
        return error(NOT_JSON_TYPE.format(given=given or "no Content-Type"), 415)
    charset = request.content_params.get("charset")
    if charset is not None and charset.lower() not in UTF8:
        return error(NOT_UTF8.format(charset=charset), 415)
    return None


def nesting_depth(text):
    """How deeply arrays and objects nest in TEXT, found without parsing it: Python's parser recurses, so a deep
    enough body would exhaust the stack (RecursionError) before anything could refuse it."""
    brackets = _NOT_A_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(_BRACKET_STEP[c] for c in brackets), default=0)


def _refuse_constant(name):
    raise ValueError(f"{name} is not JSON")


def malformed(message):
    return json_response({"errors": {"__all__": [message]}}, status=400)


def read_json(request):
    """(data, None) from REQUEST's JSON body, or (None, the 413/415/400 answer). An empty body is null."""
    refusal = content_type_refusal(request)
    if refusal is not None:
        return None, refusal
    try:
        text = request.body.decode("utf-8")  # RequestDataTooBig past the limit, Content-Length or not
    except RequestDataTooBig:
        return None, too_large()
    except UnicodeDecodeError as exc:
        return None, malformed(f"the body is not valid JSON: it is not UTF-8 ({exc})")
    if nesting_depth(text) > MAX_JSON_DEPTH:
        return None, malformed(f"the body is not acceptable JSON: it nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text or "null", parse_constant=_refuse_constant), None
    except (ValueError, RecursionError) as exc:  # ValueError covers JSONDecodeError and over-long integers
        return None, malformed(f"the body is not valid JSON: {exc}")


# -- pages ---------------------------------------------------------------------------------------------------

DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 1000
# Names of applications and environments are slugs; a cursor that could be no name is a client's mistake.
_CURSOR = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


class Page:
    """What a list request asked for: LIMIT items ordered by name, those after the name AFTER (or from the
    start)."""

    def __init__(self, limit, after):
        self.limit, self.after = limit, after

    def rows(self, queryset, field="name"):
        """QUERYSET restricted to this page, plus one row that says whether another page follows."""
        if self.after is not None:
            queryset = queryset.filter(**{f"{field}__gt": self.after})
        return queryset.order_by(field)[: self.limit + 1]


def page_request(request):
    """(Page, None) from ?limit= and ?after=, or (None, the 400 answer)."""
    raw_limit = request.GET.get("limit")
    after = request.GET.get("after")
    if raw_limit is None:
        limit = DEFAULT_PAGE_SIZE
    elif raw_limit.isascii() and raw_limit.isdigit() and 1 <= int(raw_limit) <= MAX_PAGE_SIZE:
        limit = int(raw_limit)
    else:
        return None, error(f"limit={raw_limit!r} is not valid: give a whole number from 1 to {MAX_PAGE_SIZE}", 400)
    if after is not None and not _CURSOR.match(after):
        return None, error(f"after={after!r} is not valid: give the name of the last item of the previous page", 400)
    return Page(limit, after), None


def paged(request, page, key, items, name=lambda item: item["name"]):
    """The list answer: ``{KEY: ITEMS[:limit], "next": URL or null}``. ITEMS are the page's rows (limit + 1 at
    most, from Page.rows), so one more than the limit means another page follows."""
    shown = items[: page.limit]
    following = None
    if len(items) > page.limit:
        query = request.GET.copy()
        query["after"] = name(shown[-1])
        following = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    return json_response({key: shown, "next": following})


# -- the decorator -------------------------------------------------------------------------------------------


def api_view(*methods, public=False, permission=None):
    """Wrap a view of the JSON API: authentication (unless PUBLIC), allowed METHODS, the PERMISSION each needs
    (see the module's docstring), CSRF for sessions, what a POST body must be (413, 415), JSON on any failure."""
    allowed = tuple(m.upper() for m in methods)
    if public:
        permission = NO_PERMISSION
    if permission is None:
        # Loud at import: an endpoint that forgot its permission would otherwise be open to every staff user.
        raise TypeError("api_view: declare the permission each method needs (permission=...), or NO_PERMISSION")
    needed = {method: _needed(permission, method) for method in allowed}

    def decorator(view):
        @csrf_exempt  # checked below, for sessions only: a bearer token is not sent by a browser on its own
        @functools.wraps(view)
        def wrapped(request, *args, **kwargs):
            response = _answer(view, request, allowed, public, needed, args, kwargs)
            if request.method not in SAFE_METHODS:
                audit_call(request, kwargs, response)
            return response

        wrapped.permissions = needed  # what the OpenAPI document's x-permission must say (tests/test_api_schema.py)
        return wrapped

    return decorator


def _answer(view, request, allowed, public, needed, args, kwargs):
    try:
        refusal = _refusal(request, allowed, public, needed)
        if refusal is not None:
            return refusal
        from audit import log as audit

        with audit.acting_as(audit.actor_for_request(request)):  # what the view records is its caller's
            return view(request, *args, **kwargs)
    except RequestDataTooBig:  # whoever read the body first (a view, the CSRF check of a form)
        return too_large()
    except Exception:
        log.exception("API %s %s failed", request.method, request.path)
        return error("internal error; the supervisor's log has the details", 500)


# -- the audit log -------------------------------------------------------------------------------------------

# A body larger than this is not kept in the audit log's parameters (only its size): the log records what was
# asked, not uploads.
AUDIT_BODY_LIMIT = 16 * 1024


def audit_parameters(request, kwargs):
    """What the call asked for: its query and its JSON body (audit.log.clean removes the secrets). Nothing of the
    body of a caller that did not say who it is: an anonymous client fills no log with what it sends."""
    from django.http.request import RawPostDataException

    params = {key: value for key, value in kwargs.items() if key not in ("name", "command")}
    if request.GET:
        params["query"] = {key: request.GET.getlist(key) if len(request.GET.getlist(key)) > 1 else request.GET[key]
                           for key in request.GET}
    if getattr(request, "api_auth", None) is None or not has_body(request):
        return params
    if content_length(request) > AUDIT_BODY_LIMIT:
        params["body"] = f"not recorded: {content_length(request)} bytes"
        return params
    try:
        text = request.body.decode("utf-8")
        params["body"] = (json.loads(text) if nesting_depth(text) <= MAX_JSON_DEPTH
                          else "not recorded: nested too deeply")
    except (RawPostDataException, RequestDataTooBig, UnicodeDecodeError, ValueError, RecursionError):
        params["body"] = "not recorded: not JSON"
    return params


def audit_target(request, kwargs, params):
    """``application:<name>``, ``environment:<name>``, or the path, for an API call."""
    from audit import actions

    route = getattr(request.resolver_match, "url_name", None) or ""
    name = kwargs.get("name")
    if name is None and route == "apps" and isinstance(params.get("body"), dict):
        name = params["body"].get("name")
    if isinstance(name, str) and route.startswith("app"):
        return f"{actions.APPLICATION}:{name}"
    if isinstance(name, str) and route.startswith("environment"):
        return f"{actions.ENVIRONMENT}:{name}"
    return request.path


def audit_call(request, kwargs, response):
    """Record a call that may change something (any method but the safe ones), refused or not, with its outcome:
    ok below 400, refused for 4xx, failed for 5xx; the answer's error as the detail."""
    from audit import actions
    from audit import log as audit

    try:
        route = getattr(request.resolver_match, "url_name", None)
        params = audit_parameters(request, kwargs)
        status = response.status_code
        outcome = actions.OK if status < 400 else actions.REFUSED if status < 500 else actions.FAILED
        detail = ""
        if status >= 400 or status == 202:
            try:
                answer = json.loads(response.content)
                detail = answer.get("error") or answer.get("message") or json.dumps(answer.get("errors", ""))
            except (ValueError, AttributeError):
                detail = ""
        audit.record(audit.actor_for_request(request), actions.api_action(route, request.method, kwargs),
                     audit_target(request, kwargs, params), params, outcome, status=status, detail=detail,
                     request=request)
    except Exception:  # the answer stands whatever happens to its record (audit.log.record logs its own failures)
        log.exception("API %s %s: could not record it in the audit log", request.method, request.path)


def _refusal(request, allowed, public, needed):
    """The answer refusing REQUEST before its view runs, or None."""
    if public:
        request.api_auth = "public"
    else:
        refusal = authenticate(request)
        if refusal is not None:
            return refusal
    if request.method not in allowed:
        response = error(f"method {request.method} is not allowed here; use {', '.join(allowed)}", 405)
        response["Allow"] = ", ".join(allowed)
        return response
    missing = missing_permission(request, needed[request.method])
    if missing is not None:
        return forbidden(request, missing)
    if request.method in ("POST", "PATCH"):
        # Before the CSRF check, which would read a form body whole; a body's size is known from its header.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and content_length(request) > limit:
            return too_large()
        refusal = content_type_refusal(request)
        if refusal is not None:
            return refusal
    if request.api_auth == "session" and request.method not in SAFE_METHODS:
        reason = csrf_failure(request)
        if reason is not None:
            return error(f"CSRF check failed: {reason}", 403)
    return None


@api_view("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", permission=NO_PERMISSION)
def not_found(request, rest=""):
    """Anything under /api/ that is no endpoint."""
    return error(f"no API endpoint at {request.path}; /api/schema/ lists them", 404)
