"""Names shared by the supervisor and the workers: Redis keys, queue names, states and commands.

Both sides import them from here; nothing else spells a key or a state by hand.
"""

import re

# Reported by workers when they register, and by /healthz.
VERSION = "1.0.0"

# Application and environment names end up in URLs, Redis keys and database names.
NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
NAME_RULE = "lowercase letters, digits, '-' and '_', starting with a letter, at most 40 characters"
RESERVED_APP_NAMES = frozenset({"admin", "api", "static", "media", "apps", "main"})

# Runtime state of an application on one environment.
STARTING = "starting"
RUNNING = "running"
STOPPING = "stopping"
STOPPED = "stopped"
ERROR = "error"
UNKNOWN = "unknown"  # shown, never stored: the environment is offline
RUNTIME_STATES = (STARTING, RUNNING, STOPPING, STOPPED, ERROR)
SETTLED_STATES = (RUNNING, STOPPED, ERROR)

# What the operator asked for.
DESIRED_STATES = (RUNNING, STOPPED)

# Environment liveness: DEGRADED = the agent heartbeats but its web process does not answer.
ONLINE = "online"
DEGRADED = "degraded"
OFFLINE = "offline"
ENVIRONMENT_STATUSES = (ONLINE, DEGRADED, OFFLINE)
# An environment taken out of service (environments.drain): its applications are being moved away, then all are.
DRAINING = "draining"
DRAINED = "drained"

# Commands a worker accepts; anything else is refused before the job runs.
START = "start"
STOP = "stop"
RESTART = "restart"
REMOVE = "remove"
PING = "ping"
# A move (apps.moves): DUMP writes the application's database to a transfer (below) on its source environment, LOAD
# restores it from there on its destination.
DUMP = "dump"
LOAD = "load"
# A fleet upgrade (fleet.upgrades): UPGRADE migrates the application's database to the code the worker hosts now;
# MANAGE runs one Django management command inside the application (fleet.appcommands, workers.appcommand).
UPGRADE = "upgrade"
MANAGE = "manage"
COMMANDS = (START, STOP, RESTART, REMOVE, PING, DUMP, LOAD, UPGRADE, MANAGE)
# What a worker answers when an upgrade migrated the application, and when a management command ran (whatever its
# exit status, which the answer carries).
MIGRATED = "migrated"
RAN = "ran"
# The most output of one management command a worker keeps (the rest is cut, saying so).
COMMAND_OUTPUT_MAX = 64 * 1024
# What MANAGE takes: a management command's name, and at most MANAGE_MAX_ARGS arguments (strings, each at most
# MANAGE_MAX_ARG_LENGTH characters), handed to Django's parser as a list, never to a shell.
MANAGEMENT_COMMAND_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MANAGE_MAX_ARGS = 50
MANAGE_MAX_ARG_LENGTH = 4096
# Commands that make no sense inside one application or would outlive the job: servers, shells waiting for a
# terminal, this project's own long-running processes, code generation in the worker's source tree.
MANAGE_REFUSED = frozenset({
    "runserver", "testserver", "test", "shell", "dbshell", "startapp", "startproject", "makemigrations",
    "squashmigrations", "makemessages", "compilemessages", "collectstatic", "runworker", "runsupervisor", "rqworker",
    "rqworker-pool", "rqscheduler", "rqstats", "startapp_sequential", "exportproxy", "upgradeapps", "appcommand",
})


def manage_refusal(name, args):
    """Why running the management command NAME with ARGS inside an application is refused, or None. (The worker
    also refuses a name that is not one of its commands.)"""
    if not isinstance(name, str) or not MANAGEMENT_COMMAND_RE.fullmatch(name):
        return f"{name!r} is not a management command name (lowercase letters, digits and '_')"
    if name in MANAGE_REFUSED:
        return f"{name!r} cannot be run inside an application"
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        return "the arguments must be a list of strings"
    if len(args) > MANAGE_MAX_ARGS or any(len(a) > MANAGE_MAX_ARG_LENGTH or "\x00" in a for a in args):
        return (f"at most {MANAGE_MAX_ARGS} arguments of at most {MANAGE_MAX_ARG_LENGTH} characters each, "
                "without NUL")
    if any(a == "--database" or a.startswith("--database=") for a in args):
        return "--database is always the application's own database; do not give it"
    return None
# What a worker answers when a dump or a load succeeded.
DUMPED = "dumped"
LOADED = "loaded"
# The engines a dump can come from; a load restores only a dump of its own engine.
SQLITE_ENGINE = "sqlite"
POSTGRES_ENGINE = "postgresql"
# The one function a command job may name.
COMMAND_FUNCTION = "workers.commands.execute"

_PREFIX = "appsup"

# Hash: environment name -> JSON registration (url, proxy_url, version, host, pid, heartbeat times).
ENVIRONMENTS_KEY = f"{_PREFIX}:environments"
# Hash: "<app>/<environment>" -> JSON runtime status {state, error, traceback, at}.
STATUSES_KEY = f"{_PREFIX}:statuses"
# Hash: application name -> JSON configuration (what workers and the proxy read).
APPS_KEY = f"{_PREFIX}:apps"
# Hash: environment name -> the public keys the operator enrolled for it, {"environment", "keys": [texts]}, signed
# by the supervisor (exchange.keys): what every process verifies an environment's entries with.
ENVIRONMENT_KEYS_KEY = f"{_PREFIX}:environment-keys"
# Present while the configuration cache is complete; gone after a Redis restart or flush.
CACHE_READY_KEY = f"{_PREFIX}:config-ready"


# Hash: "<app>/<environment>" -> signed JSON {app, environment, pending: ["<label>.<migration>", …], version, at}:
# the migrations of the code the worker hosts now that the application's database has not applied (workers.upgrade),
# written by the agent at start and after every start, upgrade and command; the controller mirrors it (fleet.pending).
MIGRATIONS_KEY = f"{_PREFIX}:migrations"

# Pub/sub channel: one JSON object per change (exchange.events). Subscribers drop cached views at once.
EVENTS_CHANNEL = f"{_PREFIX}:events"
# Pub/sub channel: environment events that say no more than "a heartbeat was mirrored" (same JSON). Only live pages
# want those; kept off EVENTS_CHANNEL so that 10,000 heartbeats do not wake every process's request-path cache and
# the controller's own mirror 10,000 times.
HEARTBEATS_CHANNEL = f"{_PREFIX}:heartbeats"
# String: the runsupervisor instance that holds the controller lease (expires unless renewed), signed (exchange.locks).
CONTROLLER_LEASE_KEY = f"{_PREFIX}:controller-lease"
# String: signed JSON written by the controller, {count, recent: [{name, reason, at}]}: the registrations in
# ENVIRONMENTS_KEY that do not verify (environments.mirror.Rejected). Bounded, whatever was written to that hash.
REJECTED_REGISTRATIONS_KEY = f"{_PREFIX}:rejected-registrations"
# Hash: lock kind (FORGED_LOCK_KINDS) -> how many forged holder values were broken (exchange.locks). Unsigned: a
# count for people, nothing acts on it.
FORGED_LOCKS_KEY = f"{_PREFIX}:forged-locks"
LEASE_LOCK, APP_LOCK, PROVISION_LOCK = "lease", "app", "provision"
# Hash: kind (REFUSED_KINDS) -> how many entries were refused for not being signed by whom they must be (exchange.keys):
# commands a worker refused, registrations and statuses the controller's mirror refused (each stored value once),
# configuration entries the controller rewrote. Unsigned: a count for people, nothing acts on it.
REFUSED_KEY = f"{_PREFIX}:refused"
REFUSED_COMMAND, REFUSED_REGISTRATION, REFUSED_STATUS, REFUSED_CONFIG = "command", "registration", "status", "config"
REFUSED_KINDS = (REFUSED_COMMAND, REFUSED_REGISTRATION, REFUSED_STATUS, REFUSED_CONFIG)
FORGED_LOCK_KINDS = (LEASE_LOCK, APP_LOCK, PROVISION_LOCK)


# Bounds of an application's own share of a worker web process (apps.models.Application, workers.gate): requests at
# once (a worker never gives more than its APP_WEB_THREADS) and seconds a request may take (0: no limit).
MAX_APP_CONCURRENCY = 256
MAX_APP_TIMEOUT = 24 * 3600


def load_key(environment):
    """Hash: one field per worker web process of ENVIRONMENT ("<host>:<pid>") -> signed JSON {at, apps: {app:
    {in_flight, queued, refused}}}, written by that process's gate (workers.gate) at most once a second; the key
    expires unless some process refreshes it (exchange.load)."""
    return f"{_PREFIX}:load:{environment}"


def status_field(app, environment):
    return f"{app}/{environment}"


def lock_key(app):
    """Held by the supervisor while one lifecycle operation on APP runs."""
    return f"{_PREFIX}:lock:app:{app}"


def provision_lock_key(app):
    """Held by a worker while it creates or migrates APP's database, across all workers."""
    return f"{_PREFIX}:lock:provision:{app}"


# A transfer (exchange.transfer): the bytes of one dump, in chunks, while a move carries them from one environment to
# another. Deleted once the move ends; expires anyway.
TRANSFER_CHUNK_BYTES = 1024 * 1024
TRANSFER_TTL = 3600


def transfer_key(transfer):
    """List: the chunks of the dump TRANSFER, in order (exchange.transfer)."""
    return f"{_PREFIX}:transfer:{transfer}"


def queue_name(environment):
    return f"{_PREFIX}.{environment}"


# The configuration cache entry's list of environments an application is leaving (apps.models.Removal): not served
# there any more, but the worker there still accepts the remove command that ends its placement.
LEAVING = "leaving"


# A sign-in link from the supervisor into a hosted application's admin (apps.signin, workers.signin): its purpose
# in the signed token, and the key a worker sets (SET NX, expiring) to burn its nonce, so that it signs in once.
SIGNIN_PURPOSE = "operator-signin"


def signin_nonce_key(nonce):
    return f"{_PREFIX}:signin:{nonce}"
# The operator's user in the application: operator-<username at the supervisor>.
SIGNIN_USER_PREFIX = "operator-"
# Logs of each application's hosted requests (exchange.applog), written by the worker web processes in batches.
# Bounded per application: the newest LOG_KEEP requests and ERRORS_KEEP errors, each entry at most
# LOG_ENTRY_BYTES (ERROR_ENTRY_BYTES with its traceback), and the keys expire LOG_TTL seconds after the last write
# (an application removed leaves nothing behind for long).
LOG_KEEP = 500
ERRORS_KEEP = 50
LOG_ENTRY_BYTES = 2048
ERROR_ENTRY_BYTES = 32 * 1024
LOG_TTL = 7 * 24 * 3600


# Pub/sub channel: {"type": "log", "app"} after a worker web process wrote requests of APP (exchange.applog), at most
# one per application per write (every 0.5 s). Only the events socket listens (a Logs page's live tail); kept off
# EVENTS_CHANNEL so that busy applications do not wake every process's directory.
LOGS_CHANNEL = f"{_PREFIX}:logs"
LOG_EVENT = "log"


def app_log_key(app):
    """List, newest first: signed JSON {method, path, status, ms, environment, at, error} of APP's last requests."""
    return f"{_PREFIX}:log:{app}"


def app_errors_key(app):
    """List, newest first: signed JSON of APP's last failed requests, each with its traceback."""
    return f"{_PREFIX}:errors:{app}"


def app_requests_key(app):
    """Hash: APP's request counters since its first request (exchange.applog.COUNTER fields), per environment,
    incremented by every worker web process: what /metrics exposes as appsup_app_requests_total and neighbours."""
    return f"{_PREFIX}:requests:{app}"


# Hash: environment -> signed JSON {at, agent: USAGE, web: USAGE or null}, USAGE = {cpu: percent of one core, rss:
# bytes}: what each agent measured of itself and of its web process, written with each heartbeat (exchange.usage).
# Apart from the registration so that a heartbeat still changes nothing there but its time (environments.mirror's
# fast path, and no environment event per heartbeat).
USAGE_KEY = f"{_PREFIX}:usage"
