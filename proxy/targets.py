"""Which environment a request under /apps/<name>/ goes to, or why it goes nowhere.

Everything here is decided from the application's view in Redis (exchange.directory) and the request's path, query and
cookie: the only addresses that can come out are the URLs environments registered. Nothing a client sends (Host,
X-Forwarded-Host, an absolute URL or dot segments in the path) takes part in choosing where to connect.
"""

import time
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

from exchange import contract, registry
from exchange.cookies import framework_cookie_names

PREFIX = "/apps"
ENV_PARAM = "_env"
ENV_COOKIE = "appsup_env"
# A remembered choice is kept for this long (then the page asks again).
ENV_COOKIE_MAX_AGE = 30 * 24 * 3600


def is_proxied(path):
    return path == PREFIX or path.startswith(PREFIX + "/")


@dataclass(frozen=True)
class Incoming:
    """The parts of a request the proxy routes on."""

    name: str  # application name as written in the path ("" for /apps/ itself)
    rest: str  # what follows /apps/<name>: "" or starting with "/"
    raw_path: bytes  # the path exactly as received, forwarded as is
    query: bytes  # the query string as received, less any _env parameter
    requested_env: str | None  # ?_env=<name>, if given
    cookie_env: str | None  # the remembered choice, if any
    cookie_header: bytes | None  # the Cookie header less the proxy's own cookie (None if nothing is left)
    # Addressed by the application's own host (proxy.hosts): the whole path is the application's.
    own_host: bool = False

    @property
    def app_prefix(self):
        return "/" if self.own_host else f"{PREFIX}/{self.name}/"


class BadRequest(ValueError):
    pass


def _query_without_env(query):
    """(query less _env, the last _env value or None), leaving every other parameter byte for byte as it was."""
    if not query:
        return b"", None
    kept, chosen = [], None
    for part in query.split(b"&"):
        key, _, value = part.partition(b"=")
        if unquote(key.decode("latin-1").replace("+", " ")) == ENV_PARAM:
            chosen = unquote(value.decode("latin-1").replace("+", " "))
            continue
        kept.append(part)
    return b"&".join(kept), chosen


def _split_cookies(headers):
    """(the Cookie header for the worker or None, the ENV_COOKIE value or None). The worker gets neither
    ENV_COOKIE nor the supervisor's own session and CSRF cookies (cookies.framework_cookie_names)."""
    values = [v for k, v in headers if k == b"cookie"]
    if not values:
        return None, None
    withheld = {name.encode("latin-1") for name in framework_cookie_names()}
    kept, chosen = [], None
    for value in values:
        for part in value.split(b";"):
            name, _, val = part.strip().partition(b"=")
            if name == ENV_COOKIE.encode():
                chosen = val.strip().strip(b'"').decode("latin-1")
            elif part.strip() and name.strip() not in withheld:
                kept.append(part.strip())
    return (b"; ".join(kept) or None), chosen


def parse(scope):
    """The routing facts of an ASGI scope whose path is under /apps. Raises BadRequest for paths never forwarded."""
    path = scope["path"]
    raw_path = scope.get("raw_path") or quote(path).encode("ascii")
    try:
        decoded = unquote(raw_path.decode("ascii"), errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("the path is not valid UTF-8") from None
    if decoded != path or not is_proxied(path):
        raise BadRequest("the path is not a path under /apps/")
    # Dot segments would let the worker (or anything between) resolve the path outside /apps/<name>/.
    if any(segment in (".", "..") for segment in path.split("/")):
        raise BadRequest("the path contains '.' or '..' segments")
    name, slash, rest = path[len(PREFIX) + 1:].partition("/")
    query, requested = _query_without_env(scope.get("query_string") or b"")
    cookie_header, cookie_env = _split_cookies(scope.get("headers") or ())
    return Incoming(
        name=name,
        rest=slash + rest,
        raw_path=raw_path,
        query=query,
        requested_env=requested,
        cookie_env=cookie_env,
        cookie_header=cookie_header,
    )


def parse_own_host(scope, name):
    """The routing facts of a request on application NAME's own host (proxy.hosts): its path is NAME's, whole."""
    path = scope["path"]
    raw_path = scope.get("raw_path") or quote(path).encode("ascii")
    query, requested = _query_without_env(scope.get("query_string") or b"")
    cookie_header, cookie_env = _split_cookies(scope.get("headers") or ())
    return Incoming(name=name, rest=path or "/", raw_path=raw_path, query=query, requested_env=requested,
                    cookie_env=cookie_env, cookie_header=cookie_header, own_host=True)


def valid_name(name):
    return bool(contract.NAME_RE.match(name)) and name not in contract.RESERVED_APP_NAMES


# --- Deciding ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvironmentState:
    name: str
    status: str  # online, degraded (its agent heartbeats, its web does not answer it) or offline
    # Runtime state of the application there as last reported; "stopped" when never reported, as the admin shows a
    # placement that never ran.
    state: str
    error: str
    registered: bool
    chosen: bool = False
    reason: str = ""  # why the environment is degraded or offline, for people

    @property
    def online(self):
        return self.status == contract.ONLINE

    @property
    def degraded(self):
        return self.status == contract.DEGRADED

    @property
    def running(self):
        return self.state == contract.RUNNING

    @property
    def usable(self):
        """Whether requests may go there: running, on an online environment. Not to a degraded one (its web is
        known not to answer), nor to an offline one: its registration is older than APP_HEARTBEAT_TIMEOUT, so the
        address in it may be anyone's by now (its worker moved, or an old registration was copied back)."""
        return self.running and self.online

    @property
    def shown_state(self):
        """What a page shows, as the admin does: on an offline environment a stale state would mislead, so unknown."""
        return self.state if self.status != contract.OFFLINE else contract.UNKNOWN

    def as_dict(self):
        return {
            "name": self.name,
            "status": self.status,
            "reason": self.reason or None,
            "state": self.shown_state,
            "error": self.error or None,
            "registered": self.registered,
        }


def _reason(status, registration, now):
    if status == contract.DEGRADED:
        return registration.get("problem") or "its web process does not answer its agent"
    if status == contract.OFFLINE:
        if registration is None:
            return "its worker has never registered"
        if registration.get("stopped_at") is not None:
            return "its worker stopped"
        heartbeat = registration.get("heartbeat_at")
        if heartbeat is None:
            return "no heartbeat from its worker"
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(heartbeat))
        return f"no heartbeat from its worker for {max(0, int(now - heartbeat))} s, offline since {since}"
    return ""


def _unread_since_heartbeat(registration, unread):
    """How long this process could not read Redis after REGISTRATION's last heartbeat: nor could its agent write
    one then (a heartbeat sent during the outage lands when it ends, stamped with when it was sent), so that time
    is not counted against it. At most the outage's length: an agent that is gone is offline that much later."""
    heartbeat = (registration or {}).get("heartbeat_at")
    if unread is None or not isinstance(heartbeat, (int, float)):
        return 0.0
    began, ended = unread
    return max(0.0, ended - max(began, heartbeat))


def environment_states(view, chosen=None, now=None):
    now = time.time() if now is None else now
    if view.read_at is not None:
        # As of the last read of Redis: a view answered while Redis cannot be read (its last known one) is as live
        # as it was then; Redis being away is the supervisor's trouble, not the environment's, and nobody can have
        # rewritten what was read.
        now = min(now, view.read_at)
    states = []
    for env in view.environment_names:
        registration = view.environments.get(env)
        status = view.statuses.get(env) or {}
        at = now - _unread_since_heartbeat(registration, view.unread)
        liveness = registry.status_of(registration, at)
        states.append(
            EnvironmentState(
                name=env,
                status=liveness,
                state=status.get("state") or contract.STOPPED,
                error=status.get("error") or "",
                registered=registration is not None,
                chosen=env == chosen,
                reason=_reason(liveness, registration, at),
            )
        )
    return states


@dataclass(frozen=True)
class Target:
    """Forward to BASE_URL (the environment's registered proxy URL, else its URL)."""

    app: str
    environment: str
    base_url: str
    # The environment's registered addresses: Location headers pointing at any of them are rewritten.
    known_urls: tuple
    remember: bool  # set the choice cookie on the response
    prefix: str = ""  # where the application is mounted for the client: /apps/<name>/, or / on its own host


@dataclass(frozen=True)
class Refusal:
    """No forwarding: answer STATUS with a page of KIND (the machine code automation reads) that says in words what
    happened (TITLE, MESSAGE) and what to do about it (ADVICE)."""

    status: int
    kind: str  # unknown-application, not-running, degraded, choose-environment, unknown-environment, unreachable,
    # refused-target, too-large, unavailable, bad-request
    title: str
    message: str
    advice: str = ""
    app: str = ""
    display_name: str = ""
    environment: str = ""
    environments: list = field(default_factory=list)  # EnvironmentState, when the page should list them
    headers: tuple = ()


# What to do, for the refusals built outside this module (proxy.asgi) that carry no advice of their own.
GENERAL_ADVICE = {
    "unavailable": "Try again in a few seconds. If it lasts, an operator should check the supervisor's Redis "
    "(the supervisor's /readyz says what does not answer).",
    "bad-request": "Check the address: applications are reached at /apps/<name>/, with no '.' or '..' segments.",
}


def advice_for(refusal):
    return refusal.advice or GENERAL_ADVICE.get(refusal.kind, "")


def _registered_base(registration):
    for key in ("proxy_url", "url"):
        url = (registration.get(key) or "").rstrip("/")
        if url:
            parts = urlsplit(url)
            if parts.scheme in ("http", "https") and parts.hostname:
                return url
    return None


def _start_advice(name, who="An operator can start it"):
    return f"{who} from the supervisor's admin: Applications → {name} → Start."


def _worker_advice(env):
    return (f"An operator should check the worker of environment {env}: its web process and its agent "
            "(manage.py runworker). The supervisor's admin shows it under Environments.")


def _degraded(display, env):
    """(title, message, advice) for an environment whose agent heartbeats but whose web does not answer."""
    return (
        f"{display} cannot be reached on {env.name}",
        f"{display} cannot be reached on environment {env.name}: the environment is degraded ({env.reason}). "
        "Its worker is alive but its web process does not answer.",
        f"Try again in a few seconds. If it lasts, an operator should check the web process of {env.name}; "
        "the supervisor's admin shows why under Environments.",
    )


def _not_running(display, name, env):
    """(title, message, advice) for an application that is not running on the environment chosen for it."""
    if env.status == contract.OFFLINE:
        if not env.registered:
            return (
                f"{display} is unavailable: {env.name} has never registered",
                f"Environment {env.name}, where {display} runs, has never registered with this supervisor: its "
                "worker has not started.",
                f"An operator should start the worker of environment {env.name} (its web process and its agent, "
                "manage.py runworker).",
            )
        return (
            f"{display} is unavailable: {env.name} is offline",
            f"Environment {env.name}, where {display} runs, is offline ({env.reason}), so the state of {display} "
            "there is unknown.",
            f"This page works again once {env.name} is back online. " + _worker_advice(env.name),
        )
    state = env.state
    where = f"on environment {env.name}"
    if state == contract.STOPPED:
        title, message, advice = f"{display} is stopped", f"{display} is stopped {where}.", _start_advice(name)
    elif state == contract.STARTING:
        title, message = f"{display} is starting", f"{display} is starting {where}."
        advice = "Try again in a few seconds: this page can simply be reloaded."
    elif state == contract.STOPPING:
        title, message = f"{display} is stopping", f"{display} is stopping {where}."
        advice = _start_advice(name, "Once it has stopped, an operator can start it again")
    elif state == contract.ERROR:
        title = f"{display} failed on {env.name}"
        message = f"{display} failed {where}: {env.error or 'no reason was reported'}"
        advice = (f"An operator can read the error and its traceback in the supervisor's admin (Applications → "
                  f"{name}), fix the cause and start it again.")
    else:
        title, message, advice = f"{display} is not running", f"{display} is {state} {where}.", _start_advice(name)
    if env.degraded:
        message += f" The environment is also degraded: {env.reason}."
    return title, message, advice


def decide(view, incoming, now=None):
    """Target or Refusal for INCOMING, given the application's VIEW (None when no such application)."""
    name = incoming.name
    if view is None:
        return Refusal(
            404, "unknown-application", "No such application",
            f"There is no application named {name!r} on this supervisor." if name else
            "This address names no application: applications are reached at /apps/<name>/.",
            "Check the address. The supervisor's admin lists the applications there are (Applications).",
            app=name,
        )
    display = view.config.get("display_name") or name
    names = view.environment_names
    if not names:
        return Refusal(503, "not-running", f"{display} is not running",
                       f"{display} is not placed on any environment.",
                       f"An operator can see it in the supervisor's admin: Applications → {name}.",
                       app=name, display_name=display)

    requested = incoming.requested_env
    if requested is not None and requested not in names:
        return Refusal(
            404, "unknown-environment", "No such environment",
            f"{display} does not run on an environment named {requested!r}; it runs on {', '.join(names)}.",
            "Choose one of its environments below.",
            app=name, display_name=display, environment=requested,
            environments=environment_states(view, now=now),
        )
    if requested is not None:
        chosen, remember = requested, True
    elif len(names) == 1:
        chosen, remember = names[0], False
    elif incoming.cookie_env in names:
        chosen, remember = incoming.cookie_env, False
    else:
        states = environment_states(view, now=now)
        if not any(s.usable for s in states):
            running = [s for s in states if s.running]
            if running:  # on degraded or offline environments only
                return Refusal(
                    503, "degraded" if any(s.degraded for s in running) else "not-running",
                    f"{display} cannot be reached right now",
                    f"{display} runs only on environments that cannot take requests now: "
                    + "; ".join(f"{s.name}: {s.reason}" if s.degraded else f"{s.name} is offline ({s.reason})"
                                for s in running) + ".",
                    "Try again in a few seconds. If it lasts, an operator should check the web processes of those "
                    "environments; the supervisor's admin shows why under Environments.",
                    app=name, display_name=display, environments=states, headers=((b"retry-after", b"10"),),
                )
            return Refusal(
                503, "not-running", f"{display} is not running",
                f"{display} is not running on any of its environments.",
                _start_advice(name) + " The table below shows its state on each environment.",
                app=name, display_name=display, environments=states, headers=((b"retry-after", b"10"),),
            )
        return Refusal(
            300, "choose-environment", "Choose an environment",
            f"{display} runs on several environments; choose the one to use. The choice is remembered for "
            f"{display}.",
            app=name, display_name=display, environments=states,
        )

    states = environment_states(view, chosen=chosen, now=now)
    env = next(s for s in states if s.name == chosen)
    listed = states if len(states) > 1 else []
    others = " Or use another of its environments below." if any(
        s.usable and s.online and s is not env for s in listed) else ""
    if env.status == contract.OFFLINE:
        # Never forwarded: the registration's address is no longer vouched for by a heartbeat (see usable).
        title, message, advice = _not_running(display, name, env)
        return Refusal(
            503, "not-running", title, message, advice + others,
            app=name, display_name=display, environment=chosen, environments=listed,
            headers=((b"retry-after", b"10"),),
        )
    if env.running and env.degraded:
        title, message, advice = _degraded(display, env)
        return Refusal(
            503, "degraded", title, message, advice + others,
            app=name, display_name=display, environment=chosen, environments=listed,
            headers=((b"retry-after", b"10"),),
        )
    if not env.running:
        retry = ((b"retry-after", b"5"),) if env.state in (contract.STARTING, contract.STOPPING) else ()
        title, message, advice = _not_running(display, name, env)
        return Refusal(
            503, "not-running", title, message, advice + others,
            app=name, display_name=display, environment=chosen, environments=listed, headers=retry,
        )
    registration = view.environments.get(chosen) or {}
    base = _registered_base(registration)
    if base is None:
        return Refusal(
            502, "unreachable", f"{display} is unavailable: {chosen} has no address",
            f"Environment {chosen} has no registered address to forward to: its worker has not registered.",
            f"An operator should start the worker of environment {chosen} so that it registers "
            "(manage.py runworker)." + others,
            app=name, display_name=display, environment=chosen, environments=listed,
        )
    known = tuple(u for u in {(registration.get("url") or "").rstrip("/"),
                              (registration.get("proxy_url") or "").rstrip("/")} if u)
    return Target(app=name, environment=chosen, base_url=base, known_urls=known, remember=remember,
                  prefix=incoming.app_prefix)


def _display(target, view):
    return (view.config.get("display_name") if view else "") or target.app


def unreachable(target, view, detail, status=502, now=None):
    """The Refusal for a worker that could not be reached (or answered nothing usable)."""
    states = environment_states(view, chosen=target.environment, now=now) if view is not None else []
    env = next((s for s in states if s.name == target.environment), None)
    display, where = _display(target, view), target.environment
    message = f"Environment {where} did not answer for {display}: {detail}."
    if env is not None and env.status == contract.OFFLINE:
        message += f" The environment is offline ({env.reason})."
    if status == 502:
        title = f"{display} did not answer on {where}"
        advice = (f"Try again in a few seconds. If it lasts, an operator should check that the web process of {where} "
                  "runs and that the supervisor can reach it; the supervisor's admin shows it under Environments.")
    else:
        title = f"{display} took too long to answer on {where}"
        advice = (f"Try again. If it keeps happening, an operator should look at what {display} is doing on {where} "
                  "(the supervisor waits APP_PROXY_READ_TIMEOUT seconds for its answer).")
    return Refusal(
        status, "unreachable", title, message, advice,
        app=target.app, display_name=display, environment=where, environments=states if len(states) > 1 else [],
    )


def refused_target(target, view, reason):
    """The Refusal for an environment whose address the proxy may not connect to (proxy.networks)."""
    return Refusal(
        502, "refused-target", f"{_display(target, view)} is unavailable: {target.environment}'s address is refused",
        f"The address of environment {target.environment} ({target.base_url}) is not an allowed proxy target: "
        f"{reason}. The supervisor does not connect there (APP_PROXY_ALLOWED_NETWORKS says where it may).",
        f"An operator should correct the ENVIRONMENT_PROXY_URL (or ENVIRONMENT_URL) of {target.environment}, or "
        "the supervisor's APP_PROXY_ALLOWED_NETWORKS.",
        app=target.app, display_name=_display(target, view), environment=target.environment,
    )


def describe_size(size):
    """SIZE in bytes for people: in the largest binary unit that divides it (1 MiB), else in bytes."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size:,} bytes"


def too_large(target, view, limit):
    """The Refusal for a request body over APP_PROXY_MAX_BODY."""
    return Refusal(
        413, "too-large", "Request body too large",
        f"The request body is larger than the {describe_size(limit)} ({limit} bytes) this supervisor forwards to "
        f"{target.app} (APP_PROXY_MAX_BODY).",
        "Send a smaller request, or ask an operator to raise APP_PROXY_MAX_BODY on the supervisor.",
        app=target.app, display_name=_display(target, view), environment=target.environment,
    )


def choice_link(incoming, env):
    """The link that picks ENV for the current path, keeping the rest of the query."""
    query = incoming.query.decode("latin-1")
    param = f"{ENV_PARAM}={quote(env, safe='')}"
    return f"{incoming.raw_path.decode('latin-1')}?{query + '&' if query else ''}{param}"


def choice_cookie(app, env, secure, prefix=None):
    parts = [
        f"{ENV_COOKIE}={env}",
        f"Path={prefix or f'{PREFIX}/{app}/'}",
        f"Max-Age={ENV_COOKIE_MAX_AGE}",
        "HttpOnly",
        "SameSite=Lax",
    ]
    if secure:
        parts.append("Secure")
    return "; ".join(parts).encode("latin-1")
