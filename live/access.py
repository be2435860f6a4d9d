"""Who may open the events socket (/ws/events/): the JSON API's rule (api.auth), for a socket.

- ``Authorization: Bearer <SUPERVISOR_API_TOKEN>``, or a per-user API token (then with its user's permissions,
  below), for automation. When the header is present it decides alone,
  as in the API: a wrong token is refused even alongside a session.
- Otherwise a session of an active staff user, from a page of this very site: the browser sends the session
  cookie with any page's WebSocket, so the ``Origin`` must be the host the socket was opened on (or one of
  CSRF_TRUSTED_ORIGINS), or another site could read the operator's events with the operator's cookie. A token is
  never sent by a browser on its own, so it needs no such check.

A session's user also needs the view permissions of what the socket tells (``EVENT_PERMISSIONS``: applications and
environments), as the JSON API's reads do.

A refusal is a close code and a message: 4401 for missing or wrong credentials, 4403 for credentials that are
not enough (not staff, a permission missing, another site's page).
"""

from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from api.auth import BAD_SCHEME, MISSING, NOT_STAFF, granted, token_holder

# Its events are the Applications' and Environments' lists, live.
EVENT_PERMISSIONS = ("apps.view_application", "environments.view_environment")
MISSING_PERMISSION = "permission denied: the events socket needs the {permission} permission, which {user} does not have"

UNAUTHENTICATED = 4401
FORBIDDEN = 4403

NO_ORIGIN = "a session may open this socket only from the supervisor's own pages, and this request names no Origin"
FOREIGN_ORIGIN = (
    "a session may open this socket only from the supervisor's own pages, not from {origin}; "
    "automation authenticates with 'Authorization: Bearer <SUPERVISOR_API_TOKEN>'"
)


@dataclass
class Refusal:
    code: int
    message: str


def header(scope, name):
    """The value of header NAME (lower-case bytes) in an ASGI SCOPE, as text, or None."""
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def refusal(scope):
    """None when the connection of SCOPE may receive events, else the Refusal. SCOPE["user"] comes from channels'
    AuthMiddlewareStack."""
    authorization = header(scope, b"authorization")
    if authorization is not None:
        holder = _token_holder(authorization)
        if isinstance(holder, Refusal):
            return holder
        return None if holder == "token" else _permission_refusal(holder)
    user = scope.get("user")
    if user is None or not user.is_authenticated:
        return Refusal(UNAUTHENTICATED, MISSING)
    if not (user.is_active and user.is_staff):
        return Refusal(FORBIDDEN, NOT_STAFF)
    return _permission_refusal(user) or _origin_refusal(scope)


def _permission_refusal(user):
    missing = next((permission for permission in EVENT_PERMISSIONS if not granted(user, permission)), None)
    if missing is not None:
        return Refusal(FORBIDDEN, MISSING_PERMISSION.format(permission=missing, user=user.get_username()))
    return None


def _token_holder(authorization):
    """"token", the user of a per-user token, or the Refusal."""
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return Refusal(UNAUTHENTICATED, BAD_SCHEME)
    holder = token_holder(token.strip())
    if isinstance(holder, str) and holder != "token":
        return Refusal(UNAUTHENTICATED, holder)
    return holder


def _origin_refusal(scope):
    origin = header(scope, b"origin")
    if not origin:
        return Refusal(FORBIDDEN, NO_ORIGIN)
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return None
    host = (header(scope, b"host") or "").lower()
    # Host and port only: behind a proxy that ends TLS the socket is ws:// while the page was https://.
    if host and urlsplit(origin).netloc.lower() == host:
        return None
    return Refusal(FORBIDDEN, FOREIGN_ORIGIN.format(origin=origin[:100]))
