"""Recording to the audit log: ``record`` is the one way in (docs/architecture.md, "Audit log").

    from audit import actions, log as audit
    audit.record(actor, actions.APPLICATION_START, "application:crm", params={...}, outcome=actions.OK,
                 request=request)

* ACTOR: an ``Actor`` (``Actor.user(user)``, ``Actor.controller(holder)``, ``Actor.command_line(argv)``,
  ``actor_for_request(request)``), or None: the actor set by ``acting_as`` around the code that runs (the
  controller's steps, a management command), else REQUEST's caller, else this process's command line.
* PARAMS: a dict of what was asked; ``clean`` removes secrets from it (keys on a denylist, per-user tokens,
  passwords in URLs) and bounds its size.
* OUTCOME: ``actions.OK``, ``REFUSED`` or ``FAILED``; STATUS the HTTP status answered, DETAIL the error's text.
* REQUEST: fills in the request id (``X-Request-ID``, audit.middleware) and the client's address.

``record`` never raises: an audit write that fails (the database gone) is logged at ERROR level and the operation
it describes goes on, inside its own savepoint so that it never spoils the caller's transaction.
"""

import contextlib
import contextvars
import getpass
import logging
import os
import re
import shlex
import sys
import uuid
from dataclasses import dataclass

from django.db import transaction

from . import actions

log = logging.getLogger("appsup.audit")

REQUEST_ID_HEADER = "X-Request-ID"
# What a client's X-Request-ID may be (a UUID, a trace id...): anything else is replaced by one of ours, so the log
# never stores what a client chose to put in a header beyond an id.
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")

# Keys whose values are never stored: matched anywhere in the key, case-insensitively.
SECRET_KEYS = re.compile(r"pass(word|wd|phrase)?|secret|token|key|auth|cookie|credential|signature|private|session"
                         r"|csrf|otp|salt|hash", re.IGNORECASE)
# Values that are secrets whatever their key: a per-user API token (apitokens.models.PREFIX), a PEM private key.
SECRET_VALUES = re.compile(r"appsup_[A-Za-z0-9_-]{8,}"
                           r"|-----BEGIN [A-Z ]*PRIVATE KEY-----(?:.*?-----END [A-Z ]*PRIVATE KEY-----|.*)", re.DOTALL)
# user:password@ in a URL (a webhook's, a database's).
URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*):[^@/\s]*@", re.IGNORECASE)
REMOVED = "[removed]"
# Bounds on what one entry keeps of a request's parameters.
MAX_STRING = 500
MAX_ITEMS = 50
MAX_DEPTH = 6

_acting = contextvars.ContextVar("audit_actor", default=None)


@dataclass(frozen=True)
class Actor:
    kind: str
    name: str

    @classmethod
    def user(cls, user):
        return cls(actions.USER, user.get_username())

    @classmethod
    def token(cls, api_token=None):
        """A per-user API_TOKEN (apitokens.ApiToken), or the bootstrap SUPERVISOR_API_TOKEN when None."""
        if api_token is None:
            return cls(actions.TOKEN, "SUPERVISOR_API_TOKEN")
        return cls(actions.TOKEN, f"{api_token.name} ({api_token.hint}…) of {api_token.user.get_username()}")

    @classmethod
    def controller(cls, holder):
        return cls(actions.CONTROLLER, str(holder))

    @classmethod
    def command_line(cls, argv=None):
        argv = sys.argv if argv is None else argv
        try:
            who = getpass.getuser()
        except (KeyError, OSError):  # no name for this uid (a container's arbitrary user)
            who = f"uid {os.getuid()}"
        command = shlex.join([os.path.basename(argv[0]), *scrub_argv(argv[1:])]) if argv else "?"
        return cls(actions.COMMAND_LINE, f"{who}: {scrub_text(command)}")

    @classmethod
    def anonymous(cls, why=""):
        return cls(actions.ANONYMOUS, why)


@contextlib.contextmanager
def acting_as(actor):
    """Entries recorded with no actor inside this block are ACTOR's."""
    token = _acting.set(actor)
    try:
        yield actor
    finally:
        _acting.reset(token)


def actor_for_request(request):
    """Who REQUEST's caller is, as far as the API's authentication (api.auth) or the session
    says."""
    auth = getattr(request, "api_auth", None)
    if auth == "token":
        return Actor.token()
    if auth == "user-token":
        return Actor.token(getattr(request, "api_token", None)) if getattr(request, "api_token", None) else \
            Actor(actions.TOKEN, f"a token of {request.user.get_username()}")
    if "HTTP_AUTHORIZATION" in request.META and auth is None:
        # The header decides alone (api_auth): a session beside a refused token does not make its user the actor.
        return Actor.anonymous("refused bearer token")
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return Actor.user(user)
    return Actor.anonymous("no credentials")


def new_request_id():
    return uuid.uuid4().hex


def request_id_of(request):
    """REQUEST's id: the one audit.middleware gave it, or a new one given now."""
    if getattr(request, "request_id", None) is None:
        given = request.META.get("HTTP_X_REQUEST_ID", "")
        request.request_id = given if REQUEST_ID_RE.match(given) else new_request_id()
    return request.request_id


def client_address(request):
    return request.META.get("REMOTE_ADDR") or None


# -- secrets -------------------------------------------------------------------------------------------------


def scrub_text(text):
    text = URL_PASSWORD.sub(r"\g<scheme>:" + REMOVED + "@", text)
    return SECRET_VALUES.sub(REMOVED, text)


def scrub_argv(argv):
    """ARGV with the values of secret options (--password X, --token=X) removed."""
    scrubbed, hide_next = [], False
    for arg in argv:
        option, equals, _ = arg.partition("=")
        if hide_next:
            scrubbed.append(REMOVED)
            hide_next = False
        elif arg.startswith("-") and SECRET_KEYS.search(option):
            scrubbed.append(f"{option}={REMOVED}" if equals else arg)
            hide_next = not equals
        else:
            scrubbed.append(arg)
    return scrubbed


def clean(value, depth=0):
    """VALUE without secrets, bounded in size (strings, items, nesting), as JSON-ready data."""
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            return "…"
        cleaned = {}
        for index, (key, item) in enumerate(value.items()):
            if index >= MAX_ITEMS:
                cleaned["…"] = f"{len(value) - MAX_ITEMS} more"
                break
            key = str(key)[:MAX_STRING]
            cleaned[key] = REMOVED if SECRET_KEYS.search(key) else clean(item, depth + 1)
        return cleaned
    if isinstance(value, (list, tuple)):
        if depth >= MAX_DEPTH:
            return "…"
        items = [clean(item, depth + 1) for item in value[:MAX_ITEMS]]
        return items + ([f"… {len(value) - MAX_ITEMS} more"] if len(value) > MAX_ITEMS else [])
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = scrub_text(str(value))
    return text if len(text) <= MAX_STRING else text[:MAX_STRING] + "…"


# -- recording -----------------------------------------------------------------------------------------------


def target_of(obj):
    """``<model>:<name>`` for a model instance: its unique name, its username, or its primary key."""
    opts = obj._meta
    names = {field.name for field in opts.concrete_fields if field.unique}
    if "name" in names:
        key = obj.name
    elif getattr(obj, "USERNAME_FIELD", None) in names:
        key = obj.get_username()
    else:
        key = obj.pk
    return f"{opts.model_name}:{key}"


def current_actor(request=None):
    actor = _acting.get()
    if actor is not None:
        return actor
    if request is not None:
        return actor_for_request(request)
    return Actor.command_line()


def record(actor, action, target="", params=None, outcome=actions.OK, *, status=None, detail="", request=None,
           request_id=None, at=None):
    """Append one entry to the audit log (see the module's docstring); returns it, or None if it could not be
    written."""
    from .models import Entry

    actor = actor or current_actor(request)
    try:
        entry = Entry(
            actor_kind=actor.kind,
            actor=actor.name[:200],
            action=action[:80],
            target=str(target)[:200],
            parameters=clean(params or {}),
            outcome=outcome,
            status=status,
            detail=scrub_text(str(detail or ""))[:2000],
            request_id=request_id or (request_id_of(request) if request is not None else ""),
            address=client_address(request) if request is not None else None,
        )
        if at is not None:
            entry.at = at
        with transaction.atomic():
            entry.save()
        return entry
    except Exception:
        log.exception("could not record %s %s by %s %s in the audit log", action, target, actor.kind, actor.name)
        return None
