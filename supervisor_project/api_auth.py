"""Authentication and the common envelope of the JSON API (DESIGN.md, "JSON API").

A request is let in by either

* ``Authorization: Bearer <token>`` equal to ``settings.SUPERVISOR_API_TOKEN`` (compared in constant time; an
  empty configured token never matches, so an unset variable disables token access instead of opening it), or
* a session of an active staff user; Django's CSRF check then applies to unsafe methods, as it would to a form.

An ``Authorization`` header, when present, decides alone: a wrong token is refused even alongside a session.

Answers, always JSON (never an HTML error page):

* 401 ``{"error": ...}`` with ``WWW-Authenticate: Bearer`` — credentials missing, or wrong; the message says which;
* 403 ``{"error": ...}`` — a staff session whose unsafe request failed the CSRF check;
* 405 ``{"error": ...}`` with ``Allow`` — a method the endpoint does not take;
* 500 ``{"error": ...}`` — an unexpected exception (logged with its traceback).

Reads that had to answer from the database mirror because Redis is unavailable still answer 200, with the reason
in an ``X-Supervisor-Warning`` header.

Views are wrapped with ``api_view("GET", "POST", …)``; ``json_response``, ``error`` and ``with_warning`` build
answers.
"""

import functools
import hmac
import logging

from django.conf import settings
from django.http import JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

log = logging.getLogger("appsup.api")

SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE")
WARNING_HEADER = "X-Supervisor-Warning"

MISSING = (
    "authentication required: send 'Authorization: Bearer <SUPERVISOR_API_TOKEN>' or log in to the admin as staff"
)
WRONG_TOKEN = "invalid bearer token: it does not match SUPERVISOR_API_TOKEN"
NO_TOKEN_CONFIGURED = "bearer token refused: SUPERVISOR_API_TOKEN is not set on this supervisor, so no token is valid"
BAD_SCHEME = "unsupported Authorization header: use 'Authorization: Bearer <token>'"
NOT_STAFF = "your session's user is not active staff; log in to the admin as staff or use a bearer token"


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


def authenticate(request):
    """None when REQUEST may use the API, else the JSON response refusing it."""
    present, token = bearer_token(request)
    if present:
        if token is None:
            return unauthorized(BAD_SCHEME, invalid_token=True)
        if not settings.SUPERVISOR_API_TOKEN:
            return unauthorized(NO_TOKEN_CONFIGURED, invalid_token=True)
        if not token_matches(token):
            return unauthorized(WRONG_TOKEN, invalid_token=True)
        request.api_auth = "token"
        return None
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return unauthorized(MISSING)
    if not (user.is_active and user.is_staff):
        return unauthorized(NOT_STAFF)
    request.api_auth = "session"
    return None


def api_view(*methods):
    """Wrap a view of the JSON API: authentication, allowed METHODS, CSRF for sessions, JSON on any failure."""
    allowed = tuple(m.upper() for m in methods)

    def decorator(view):
        @csrf_exempt  # checked below, for sessions only: a bearer token is not sent by a browser on its own
        @functools.wraps(view)
        def wrapped(request, *args, **kwargs):
            refusal = authenticate(request)
            if refusal is not None:
                return refusal
            if request.method not in allowed:
                response = error(f"method {request.method} is not allowed here; use {', '.join(allowed)}", 405)
                response["Allow"] = ", ".join(allowed)
                return response
            if request.api_auth == "session" and request.method not in SAFE_METHODS:
                reason = csrf_failure(request)
                if reason is not None:
                    return error(f"CSRF check failed: {reason}", 403)
            try:
                return view(request, *args, **kwargs)
            except Exception:
                log.exception("API %s %s failed", request.method, request.path)
                return error("internal error; the supervisor's log has the details", 500)

        return wrapped

    return decorator


@api_view("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
def not_found(request, rest=""):
    """Anything under /api/ that is no endpoint."""
    return error(f"no API endpoint at {request.path}; see /api/environments/ and /api/apps/", 404)
