"""The names the audit log speaks (docs/architecture.md, "Audit log"), defined once: who may act (actor kinds),
how an action ended (outcomes), and the dotted name of every action, ``<what it is done to>.<verb>``.

An action with no name below is still recorded, under a name built the same way (``api.<route>.<method>``, or
``<model>.<admin action>``): a new endpoint or admin action is never missing from the log, only less well named
until it is added here.
"""

# Actor kinds.
USER = "user"  # a staff user's session in the admin or the API
TOKEN = "token"  # a bearer token: SUPERVISOR_API_TOKEN, or a per-user API token (apitokens)
CONTROLLER = "controller"  # runsupervisor, named by its lease holder id
COMMAND_LINE = "command line"  # manage.py, named by the OS user and the command
ANONYMOUS = "anonymous"  # a request refused before it said who it is (no or wrong credentials)
ACTOR_KINDS = (USER, TOKEN, CONTROLLER, COMMAND_LINE, ANONYMOUS)

# Outcomes.
OK = "ok"
REFUSED = "refused"  # never carried out: no credentials, no permission, bad input (4xx)
FAILED = "failed"  # tried and failed (5xx, an error reported by a worker, an exception)
OUTCOMES = (OK, REFUSED, FAILED)

# Targets are "<kind>:<name>".
APPLICATION = "application"
ENVIRONMENT = "environment"

# Applications.
APPLICATION_CREATE = "application.create"
APPLICATION_CHANGE = "application.change"
APPLICATION_DELETE = "application.delete"
APPLICATION_START = "application.start"
APPLICATION_STOP = "application.stop"
APPLICATION_RESTART = "application.restart"
APPLICATION_MOVE = "application.move"
APPLICATION_REMOVE = "application.remove"  # from an environment it left (the controller's remove_one)
APPLICATION_SIGNIN_LINK = "application.signin_link"  # a one-time link into its admin (apps/signin.py)
APPLICATION_MOVE_CLOSED = "application.move_closed"  # a move cut off by a crash, closed by the controller
# Environments.
ENVIRONMENT_DELETE = "environment.delete"
ENVIRONMENT_DRAIN = "environment.drain"
ENVIRONMENT_UNDRAIN = "environment.undrain"
ENVIRONMENT_FORGET = "environment.forget"
ENVIRONMENT_DRAINED = "environment.drained"  # the controller moved the last application off a draining environment
# The controller's own.
CACHE_REBUILD = "cache.rebuild"  # Redis's configuration cache rebuilt from the database
ALERT_SEND = "alert.send"  # one attempt to deliver an alert to a channel
AUDIT_PRUNE = "audit.prune"  # entries older than APP_AUDIT_DAYS deleted
# Command-line commands without an action of their own above.
USER_ENSURE_ADMIN = "user.ensureadmin"
# What the API answers for a path that is no endpoint.
API_UNKNOWN = "api.unknown"

# (API route name, method) -> action. Route names are supervisor_project/urls.py's.
API_ACTIONS = {
    ("apps", "POST"): APPLICATION_CREATE,
    ("app", "PATCH"): APPLICATION_CHANGE,
    ("app", "DELETE"): APPLICATION_DELETE,
    ("app-move", "POST"): APPLICATION_MOVE,
    ("app-signin-link", "POST"): APPLICATION_SIGNIN_LINK,
    ("environment", "DELETE"): ENVIRONMENT_DELETE,
    ("environment-drain", "POST"): ENVIRONMENT_DRAIN,
    ("environment-undrain", "POST"): ENVIRONMENT_UNDRAIN,
}
# app-command's verb is in its URL: start, stop or restart.
API_COMMANDS = {"start": APPLICATION_START, "stop": APPLICATION_STOP, "restart": APPLICATION_RESTART}

# Admin actions and custom admin views named by their function (or URL) name; the others become <model>.<name>.
ADMIN_VERBS = {"delete_selected": "delete", "add": "create", "signin": "signin_link"}


def api_action(route, method, kwargs):
    """The action of an API call to ROUTE (its URL name, or None) with METHOD."""
    if route == "app-command" and kwargs.get("command") in API_COMMANDS:
        return API_COMMANDS[kwargs["command"]]
    if not route:
        return API_UNKNOWN
    return API_ACTIONS.get((route, method), f"api.{route}.{method.lower()}")


def admin_action(model_name, verb):
    """The action of the admin action (or custom admin view) VERB on a MODEL_NAME."""
    return f"{model_name}.{ADMIN_VERBS.get(verb, verb)}"
