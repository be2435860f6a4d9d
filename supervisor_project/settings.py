"""The one settings module for every role: configuration comes from environment variables only
(docs/architecture.md, "Configuration")."""

from datetime import timedelta
from pathlib import Path

from monitoring.queues import EnvironmentQueues

from .config import BASE_DIR, BASE_INSTALLED_APPS, load

CONFIG = load()

APP_MODE = CONFIG.mode
APP_DISCOVERY_ADAPTER = CONFIG.discovery_adapter
APP_PROCESS_ADAPTER = CONFIG.process_adapter
APP_SUPERVISOR_REDIS_URL = CONFIG.supervisor_redis_url
APP_COMMAND_REDIS_URL = CONFIG.command_redis_url
ENVIRONMENT_NAME = CONFIG.environment_name
ENVIRONMENT_URL = CONFIG.environment_url
ENVIRONMENT_PROXY_URL = CONFIG.environment_proxy_url
APP_HEARTBEAT_INTERVAL = CONFIG.heartbeat_interval
APP_HEARTBEAT_TIMEOUT = CONFIG.heartbeat_timeout
SUPERVISOR_API_TOKEN = CONFIG.api_token
# The HMAC key of alert webhooks (alerts.delivery), optional; nothing else is signed with it.
APP_SHARED_SECRET = CONFIG.shared_secret
# Ed25519 keys (exchange.keys): who this process signs as, with which private key, and the supervisor's public keys.
APP_SIGNER = {"supervisor": "supervisor", "worker": CONFIG.environment_name}.get(CONFIG.mode, "")
APP_SIGNING_KEYS = {name: text for name, text in (("supervisor", CONFIG.supervisor_key),
                                                  (CONFIG.environment_name, CONFIG.environment_key)) if text and name}
APP_SUPERVISOR_PUBLIC_KEYS = CONFIG.supervisor_public_keys
# Record the public key of an environment's first registration when none is enrolled (environments.enrollment).
APP_TRUST_ON_FIRST_USE = CONFIG.trust_on_first_use
APP_STORAGE_DIR = CONFIG.storage_dir
# Extra Django apps every hosted application gets (its tables live in each application's own database).
APP_HOSTED_APPS = CONFIG.hosted_apps
APP_HOSTED_URLCONF = CONFIG.hosted_urlconf  # mounted at /apps/<name>/ beside the hosted admin (workers/hosted_urls.py)
# Seconds a sequential start waits for each environment unless told otherwise.
APP_COMMAND_TIMEOUT = 120
APP_PROXY_CONNECT_TIMEOUT = CONFIG.proxy_connect_timeout
APP_PROXY_READ_TIMEOUT = CONFIG.proxy_read_timeout
# Where the access proxy may connect (a tuple of ipaddress networks; None: anywhere but link-local and cloud metadata
# addresses), and the largest request body it forwards (bytes; None: no limit). See proxy.networks, proxy.forward.
APP_PROXY_ALLOWED_NETWORKS = CONFIG.proxy_allowed_networks
APP_PROXY_MAX_BODY = CONFIG.proxy_max_body
APP_WEB_THREADS = CONFIG.web_threads
APP_WEB_PROCESSES = CONFIG.web_processes
# Each application's share of a worker web process (workers.gate): requests at once, requests waiting and for how
# long (seconds), and seconds before a request is answered 504 (0: never).
APP_APP_CONCURRENCY = CONFIG.app_concurrency
APP_APP_QUEUE = CONFIG.app_queue
APP_APP_QUEUE_WAIT = CONFIG.app_queue_wait
APP_APP_TIMEOUT = CONFIG.app_timeout
# Fleet upgrades (fleet.upgrades): applications migrated at once per environment, and whether the controller
# migrates by itself what a worker started with new code reports pending.
APP_UPGRADE_CONCURRENCY = CONFIG.upgrade_concurrency
APP_AUTO_UPGRADE = CONFIG.auto_upgrade
APP_UPGRADE_BACKUP = CONFIG.upgrade_backup
# Every web process's bounds on a request's head: bytes of request line and headers, seconds to receive them
# (supervisor_project.edge).
APP_MAX_HEADER_BYTES = CONFIG.max_header_bytes
APP_HEAD_TIMEOUT = CONFIG.head_timeout
# Where runsupervisor POSTs alerts (a tuple of URLs), besides the channels added in the admin (alerts/).
APP_ALERT_WEBHOOKS = CONFIG.alert_webhooks
APP_ALERT_STOP_GRACE = CONFIG.alert_stop_grace
APP_ALERT_AFTER = CONFIG.alert_after
APP_ALERT_FLAP_COUNT = CONFIG.alert_flap_count
APP_ALERT_FLAP_WINDOW = CONFIG.alert_flap_window
# Days the audit log keeps its entries; the controller prunes older ones (audit.models).
APP_AUDIT_DAYS = CONFIG.audit_days
# Scheduled backups (apps.backups): a cron expression ("" = none) and how many each application keeps; each
# application may override both in the admin. Stored through STORAGES["backups"].
APP_BACKUP_SCHEDULE = CONFIG.backup_schedule
APP_BACKUP_KEEP = CONFIG.backup_keep
# Alerts' e-mail channels: EMAIL_URL (e.g. smtp+tls://user:password@host:587) and DEFAULT_FROM_EMAIL.
globals().update({name: value for name, value in CONFIG.email.items() if value is not None})
if CONFIG.default_from_email:
    DEFAULT_FROM_EMAIL = CONFIG.default_from_email

# An origin per application (proxy/hosts.py, workers/hosting.py): with APP_APPS_DOMAIN each application answers at
# <name>.<APP_APPS_DOMAIN> and its custom domains, and the supervisor's admin, API and events only on
# APP_SUPERVISOR_HOSTS. Unset: every application at /apps/<name>/ on the supervisor's host, one origin for all.
APP_APPS_DOMAIN = CONFIG.apps_domain
APP_SUPERVISOR_HOSTS = CONFIG.supervisor_hosts
# Seconds an "Open as operator" link is valid (apps/signin.py, workers/signin.py).
APP_SIGNIN_MAX_AGE = CONFIG.signin_max_age

SECRET_KEY = CONFIG.secret_key
if APP_MODE == "worker":
    # Hosted applications sign their sessions and tokens with a key of their own, derived from this one and their
    # name for the request in hand (workers/keys.py); the worker's own pages (/healthz) use this one as it is.
    from workers.keys import PerApplicationKey

    SECRET_KEY = PerApplicationKey(SECRET_KEY)
DEBUG = CONFIG.debug
ALLOWED_HOSTS = CONFIG.allowed_hosts
CSRF_TRUSTED_ORIGINS = CONFIG.csrf_trusted_origins
# Hosts and CSRF behind the supervisor's access proxy. The proxy forwards the client's own Host header, so a
# worker sees the host the browser used (the supervisor's, or its own when reached directly) and Django's CSRF
# origin check compares the browser's Origin with it, unchanged. We do NOT set USE_X_FORWARDED_HOST: anyone who
# reaches a worker directly could set X-Forwarded-Host, and it is not needed. Hence ALLOWED_HOSTS of a worker
# lists every host name clients use to reach it, directly or through the supervisor (the default covers a local
# cluster). The scheme is the one thing the Host cannot carry: a supervisor behind TLS talks plain HTTP to its
# workers, so workers take X-Forwarded-Proto (set by the proxy) as the scheme the browser used; a client that
# forges it only mislabels its own request.
if APP_MODE == "worker":
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Hosted applications' login_required views send visitors to their own admin login, below their mount point.
LOGIN_URL = "admin:login"

# config.BASE_INSTALLED_APPS (our apps first, so that `runworker` is the agent's, not channels'), then the extra
# apps of hosted applications, where applications are hosted: a supervisor only forwards to them, and its admin
# must not offer the operator's models.
INSTALLED_APPS = [*BASE_INSTALLED_APPS, *(APP_HOSTED_APPS if APP_MODE != "supervisor" else [])]

MIDDLEWARE = [
    # Workers only (it steps aside elsewhere): mounts hosted applications at /apps/<name>/. Outermost, so that it
    # scopes the cookies the session, CSRF and messages middleware set on the way out (workers/hosting.py).
    "workers.hosting.HostedApplicationMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # The supervisor's pages (never a hosted application's): a Content-Security-Policy, and their cookies made Secure
    # when the request came over TLS: outside the session and CSRF middleware, which set theirs on the way out.
    "supervisor_project.pages.SupervisorPagesMiddleware",
    # Supervisor only: every request's id (X-Request-ID, given or made), answered and stored on its audit entries.
    "audit.middleware.RequestIdMiddleware",
    # Serves the admin's static files from the installed apps: no collectstatic step, no extra web server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a locked-out login into its 429 answer.
    "axes.middleware.AxesMiddleware",
]

# The supervisor's cookies: host-only (no Domain: never sent to another host, an application's origin included),
# HttpOnly, SameSite=Lax; Secure behind TLS (supervisor_project.pages). The admin's scripts never read the CSRF
# cookie (its forms carry the token), so it is HttpOnly too.
SESSION_COOKIE_DOMAIN = None
CSRF_COOKIE_DOMAIN = None
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
# The supervisor's pages load scripts, styles and images from itself only, and open its own /ws/events/ (the
# admin's live updates, live/static/live/live.js); the admin's templates use a few style attributes.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# The admin login throttle (supervisor_project/throttle.py): its backend first, so a locked-out pair is refused
# before any password is checked.
AUTHENTICATION_BACKENDS = [
    "supervisor_project.throttle.SupervisorLoginThrottle",
    "django.contrib.auth.backends.ModelBackend",
]
# A worker has no supervisor login to protect: its hosted applications' logins are theirs.
AXES_ENABLED = APP_MODE != "worker"
# 5 wrong passwords for one username from one address lock that pair out for 15 minutes.
AXES_FAILURE_LIMIT = 5
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "supervisor_project.throttle.client_ip"
AXES_WHITELIST_CALLABLE = "supervisor_project.throttle.not_the_supervisors_login"
# One log line per failure and lockout is enough; a line per successful login is not needed.
AXES_DISABLE_ACCESS_LOG = True

# A worker serves /healthz and, through workers.hosting, /apps/<name>/…; never the supervisor's admin or API.
ROOT_URLCONF = "workers.urls" if APP_MODE == "worker" else "supervisor_project.urls"
WSGI_APPLICATION = "supervisor_project.wsgi.application"
ASGI_APPLICATION = "supervisor_project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": CONFIG.database}
if DATABASES["default"].get("ENGINE", "").endswith("sqlite3"):
    # SQLite creates the file but not its directory; a fresh checkout has no storage/ yet.
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
DATABASE_ROUTERS = ["workers.routing.HostedDatabaseRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = CONFIG.time_zone  # how pages show times; stored ones are UTC (USE_TZ)
USE_I18N = True
USE_TZ = True

# Relative on purpose, and handed to the staticfiles storage as it is: a hosted application's pages link
# /apps/<name>/static/… (the per-request script prefix, added by workers/static.py, since Django's settings add it
# only once per process), which workers.hosting hands on to WhiteNoise as /static/….
STATIC_URL = "static/"
WHITENOISE_STATIC_PREFIX = "/static/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "workers.static.ScriptPrefixedStaticFilesStorage", "OPTIONS": {"base_url": STATIC_URL}},
    # Applications' backups, kept off the environments (apps.backups): APP_BACKUP_STORAGE.
    "backups": CONFIG.backup_storage,
}
WHITENOISE_USE_FINDERS = True

# QUEUE_CLASS: the queues django-rq builds itself, i.e. its dashboard's (ours are built by exchange/channel.py).
RQ = {"COMMIT_MODE": "on_db_commit", "QUEUE_CLASS": "monitoring.dashboard.DashboardQueue"}
# Queues are one per environment and built at run time (exchange/channel.py). django-rq's dashboard (in the admin)
# lists those of the environments in the database, read whenever it looks.
RQ_QUEUES = EnvironmentQueues()

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    # Warnings and errors of every library, Django's own "django.request" included (a hosted view that raises: its
    # traceback), reach the process's output whatever server runs it; Django alone prints them only with DEBUG.
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "appsup": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "rq.worker": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}
