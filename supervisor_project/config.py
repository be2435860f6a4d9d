"""Reads and validates the process configuration from environment variables (docs/architecture.md, "Configuration").

Every problem is collected and reported at once, each naming the variable and the fix, so a
misconfigured supervisor or worker stops at start instead of failing later in a request.
"""

import contextlib
import importlib.util
import ipaddress
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

from exchange.contract import MAX_APP_CONCURRENCY, MAX_APP_TIMEOUT, NAME_RE, NAME_RULE

BASE_DIR = Path(__file__).resolve().parent.parent

MODES = ("supervisor", "worker", "")
ADAPTERS = ("remote", "local")
# The one environment of a single instance (APP_MODE unset), which hosts its applications itself.
SINGLE_ENVIRONMENT = "local"
DIALECTS = {
    "sqlite": "django.db.backends.sqlite3",
    "postgres": "django.db.backends.postgresql",
}
DEFAULT_HEARTBEAT_INTERVAL = 120
# The access proxy's patience with a worker: to open a connection, and between two reads of its answer.
DEFAULT_PROXY_CONNECT_TIMEOUT = 5.0
DEFAULT_PROXY_READ_TIMEOUT = 60.0
# Threads per web process serving Django's pages (supervisor_project.asgi); the bench's reference is 8.
DEFAULT_WEB_THREADS = 8
MAX_WEB_THREADS = MAX_APP_CONCURRENCY
# Processes per web (uvicorn's --workers, supervisor_project.web): one per core is the usual choice.
DEFAULT_WEB_PROCESSES = 1
MAX_WEB_PROCESSES = 64
# Every web process's bounds on a request's head (supervisor_project.edge): request line and headers, and the time
# they may take to arrive. 32 KiB is nginx's default total (four 8 KiB buffers), far above a browser's head even with
# a few applications' cookies; the range accepted keeps both a working browser and the bound. A real client sends
# its head at once after connecting; 20 s leaves a slow link room and lets no idle client hold a connection a minute.
# A fair share per application in each worker web process (workers.gate): how many of its requests run at once
# (default: half the threads, so one application never holds them all), how many more may wait for a turn and how
# long, and how long one may run before its client is answered 504. 0 as the timeout: none. The queue is bounded
# by the wait more than by its length: a burst of an application's users (16 at once, say, on an otherwise idle
# worker) waits its turn rather than being refused; 64 waiting cost the loop nothing worth counting.
DEFAULT_APP_QUEUE = 64
# Fleet upgrades (fleet.upgrades): applications migrated at once on one environment, at most.
DEFAULT_UPGRADE_CONCURRENCY = 2
MAX_UPGRADE_CONCURRENCY = 64
MAX_APP_QUEUE = 1000
DEFAULT_APP_QUEUE_WAIT = 3.0
DEFAULT_APP_TIMEOUT = 60
DEFAULT_MAX_HEADER_BYTES = 32 * 1024
MIN_MAX_HEADER_BYTES = 4 * 1024
MAX_MAX_HEADER_BYTES = 1024 * 1024
DEFAULT_HEAD_TIMEOUT = 20.0
# Scheduled backups keep this many per application unless told otherwise (apps.backups).
DEFAULT_BACKUP_KEEP = 7
BACKUP_STORAGES = ("filesystem", "s3")
# Shorter ones are refused: it is what alert receivers tell real alerts from forged ones by.
MIN_SHARED_SECRET = 16
# The bootstrap API token acts as a superuser over every application: a guessable one is refused at start-up.
MIN_API_TOKEN = 32
# A sign-in link from the supervisor into a hosted application's admin is refused after this many seconds.
DEFAULT_SIGNIN_MAX_AGE = 60
# A DNS name: labels of letters, digits and inner hyphens, at least two of them.
_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
INSECURE_SECRET_KEY = "insecure-development-key-set-SECRET_KEY-in-production"
# The Django apps every process installs, before APP_HOSTED_APPS (settings.INSTALLED_APPS). Known here so that a
# hosted app repeating one is refused by name instead of by Django's traceback.
BASE_INSTALLED_APPS = (
    # Ours first: `runworker` must be the agent's, not channels' command of the same name.
    "workers",
    "single",
    "environments",
    "apps",
    "controller",
    "proxy",
    "live",
    "alerts",
    "monitoring",
    "apitokens",
    "fleet",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_rq",
    "channels",
    # The supervisor's admin login throttle (supervisor_project/throttle.py); its tables live in every process's
    # own database, never in a hosted application's.
    "axes",
    # Last: it re-registers the admin of django.contrib.auth's users and groups with its hooks (audit/admin.py).
    "audit",
)


class ConfigError(ImproperlyConfigured):
    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__(
            "App Supervisor cannot start, its configuration is invalid:\n"
            + "\n".join(f"  - {p}" for p in self.problems)
        )


@contextlib.contextmanager
def exit_on_config_error():
    """For entry points that load the settings themselves (asgi.py under uvicorn): report a bad configuration as
    manage.py does, the message on stderr and exit status 2, without a traceback."""
    try:
        yield
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        sys.exit(2)


# Days the audit log keeps its entries (the controller prunes older ones); ten years at most is a bound, not a
# recommendation: the log grows with every operation.
DEFAULT_AUDIT_DAYS = 90
MAX_AUDIT_DAYS = 3650

# A worker stopped on purpose may be away this long (a redeploy) before it is alerted offline.
DEFAULT_ALERT_STOP_GRACE = 120.0
# An environment whose status changed this many times within the window is flapping: one alert says so, the rest
# are held until it has been steady for a whole window (alerts.transitions).
DEFAULT_ALERT_FLAP_COUNT = 4
DEFAULT_ALERT_FLAP_WINDOW = 600.0


@dataclass
class Config:
    mode: str
    discovery_adapter: str
    process_adapter: str
    supervisor_redis_url: str  # "" = embedded Redis under the storage directory
    command_redis_url: str
    environment_name: str
    environment_url: str
    environment_proxy_url: str
    heartbeat_interval: int
    heartbeat_timeout: int
    api_token: str
    storage_dir: Path
    database: dict
    secret_key: str
    debug: bool
    hosted_apps: list = field(default_factory=list)
    hosted_urlconf: str = ""  # the operator's URLconf, mounted beside the hosted admin; "" = the hosted admin alone
    allowed_hosts: list = field(default_factory=list)
    csrf_trusted_origins: list = field(default_factory=list)
    proxy_connect_timeout: float = DEFAULT_PROXY_CONNECT_TIMEOUT
    proxy_read_timeout: float = DEFAULT_PROXY_READ_TIMEOUT
    shared_secret: str = ""  # the supervisor's alert webhooks' HMAC key only
    supervisor_key: str = ""  # the supervisor's Ed25519 private key (exchange.keys)
    supervisor_public_keys: tuple = ()  # the supervisor's valid public keys (workers; on the supervisor: older ones)
    environment_key: str = ""  # this worker's Ed25519 private key
    trust_on_first_use: bool = False  # record the key of an unknown environment's first registration
    proxy_allowed_networks: tuple | None = None  # None: anywhere but link-local and metadata addresses (proxy.networks)
    proxy_max_body: int | None = None  # bytes; None: no limit
    alert_webhooks: tuple = ()  # URLs runsupervisor POSTs alerts to, besides the channels added in the admin
    # A worker stopped on purpose (SIGTERM, a redeploy) is alerted offline only if not back within this many seconds.
    alert_stop_grace: float = DEFAULT_ALERT_STOP_GRACE
    # An environment that went offline unplanned is alerted once it has been offline this long (0: at once).
    alert_after: float = 0.0
    alert_flap_count: int = DEFAULT_ALERT_FLAP_COUNT
    alert_flap_window: float = DEFAULT_ALERT_FLAP_WINDOW
    time_zone: str = "UTC"  # TZ: the time zone pages show times in (stored times are UTC whatever it is)
    email: dict = field(default_factory=dict)  # Django's EMAIL_* settings from EMAIL_URL; {}: Django's defaults
    default_from_email: str = ""
    web_threads: int = DEFAULT_WEB_THREADS
    web_processes: int = DEFAULT_WEB_PROCESSES
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    head_timeout: float = DEFAULT_HEAD_TIMEOUT
    app_concurrency: int = max(1, DEFAULT_WEB_THREADS // 2)
    app_queue: int = DEFAULT_APP_QUEUE
    app_queue_wait: float = DEFAULT_APP_QUEUE_WAIT
    app_timeout: int = DEFAULT_APP_TIMEOUT  # seconds; 0 = none
    apps_domain: str = ""  # "" = every application at /apps/<name>/ on the supervisor's hosts (one origin)
    supervisor_hosts: tuple = ()  # host names the supervisor's admin, API and events answer on (with apps_domain)
    signin_max_age: int = DEFAULT_SIGNIN_MAX_AGE
    audit_days: int = DEFAULT_AUDIT_DAYS  # the audit log's retention (audit.models.EntryQuerySet.prune)
    upgrade_concurrency: int = DEFAULT_UPGRADE_CONCURRENCY
    auto_upgrade: bool = False
    upgrade_backup: bool = True
    backup_schedule: str = ""  # a cron expression; "" = no scheduled backups
    backup_keep: int = DEFAULT_BACKUP_KEEP
    backup_storage: dict = field(default_factory=dict)  # STORAGES["backups"]

    @property
    def is_worker(self):
        return self.mode == "worker"


def is_domain_name(value):
    return bool(_DOMAIN_RE.match(value)) and "." in value


def _is_ip(text):
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def _origins(env, mode, problems):
    """(APP_APPS_DOMAIN, APP_SUPERVISOR_HOSTS): an origin per application, the supervisor on hosts of its own."""
    domain = env.str("APP_APPS_DOMAIN", default="").strip().lower().rstrip(".")
    hosts = tuple(h.strip().lower().rstrip(".") for h in env.list("APP_SUPERVISOR_HOSTS", default=[]) if h.strip())
    if domain and not is_domain_name(domain):
        problems.append(f"APP_APPS_DOMAIN={domain!r} is not a domain name; use e.g. apps.example.com (each "
                        "application then answers at <name>.apps.example.com)")
        domain = ""
    for host in hosts:
        if not is_domain_name(host) and host != "localhost" and not _is_ip(host):
            problems.append(f"APP_SUPERVISOR_HOSTS names {host!r}, which is not a host name; use e.g. "
                            "admin.example.com")
        elif domain and host.endswith("." + domain):
            problems.append(f"APP_SUPERVISOR_HOSTS names {host!r}, inside APP_APPS_DOMAIN={domain}: the supervisor "
                            "must not share the applications' domain (use e.g. admin.example.com)")
    if domain and not mode:
        problems.append("APP_APPS_DOMAIN is for a cluster (APP_MODE=supervisor or worker); a single instance serves "
                        "its applications at /apps/<name>/ on its own host")
    if domain and mode == "supervisor" and not hosts:
        problems.append(f"APP_SUPERVISOR_HOSTS is required with APP_APPS_DOMAIN={domain}: name the host(s) the "
                        "supervisor's admin and API answer on, e.g. admin.example.com")
    if hosts and not domain and mode == "supervisor":
        problems.append("APP_SUPERVISOR_HOSTS is set without APP_APPS_DOMAIN: without an origin per application the "
                        "applications are served on the supervisor's own hosts; set APP_APPS_DOMAIN too, or unset "
                        "APP_SUPERVISOR_HOSTS")
    return domain, hosts


def _http_url_problem(var, value):
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{var}={value!r} is not an http(s) URL; set it to the address, e.g. http://worker-a:15000"
    return None


def _redis_url_problem(var, value):
    if value and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
        return f"{var}={value!r} is not a Redis URL; use redis://host:6379/0 (or leave it unset for the embedded Redis)"
    return None


KEYPAIR_HINT = "`python -m exchange.keys` prints a new key pair"


def _signing_keys(env, mode, problems):
    """(APP_SUPERVISOR_KEY, APP_SUPERVISOR_PUBLIC_KEYS, APP_ENVIRONMENT_KEY) checked for MODE (exchange.keys): the
    supervisor signs with its private key; a worker with its own, and verifies the supervisor's public keys."""
    from exchange import keys

    supervisor_key = env.str("APP_SUPERVISOR_KEY", default="").strip()
    public_keys = [text.strip() for text in env.str("APP_SUPERVISOR_PUBLIC_KEYS", default="").split(",") if text.strip()]
    environment_key = env.str("APP_ENVIRONMENT_KEY", default="").strip()
    if mode == "supervisor" and not supervisor_key:
        problems.append(f"APP_SUPERVISOR_KEY is required with APP_MODE=supervisor: the supervisor's private key, which "
                        f"signs commands and the configuration ({KEYPAIR_HINT}; give its public key to every worker "
                        "as APP_SUPERVISOR_PUBLIC_KEYS)")
    if mode == "worker":
        if not environment_key:
            problems.append(f"APP_ENVIRONMENT_KEY is required with APP_MODE=worker: this environment's private key, "
                            f"which signs its registration and statuses ({KEYPAIR_HINT}; enroll its public key on the "
                            "supervisor with `manage.py enrollenvironment NAME --public-key=KEY`)")
        if not public_keys:
            problems.append("APP_SUPERVISOR_PUBLIC_KEYS is required with APP_MODE=worker: the supervisor's public key "
                            "(two, comma-separated, during a rotation), to verify its commands and configuration")
    if mode == "worker" and supervisor_key:  # a single instance is the supervisor: it may hold its key
        problems.append("APP_SUPERVISOR_KEY is the supervisor's private key: never give it to a worker (it could "
                        "command every environment); set APP_SUPERVISOR_PUBLIC_KEYS there")
    for name, text, parse in (("APP_SUPERVISOR_KEY", supervisor_key, keys.private_key),
                              ("APP_ENVIRONMENT_KEY", environment_key, keys.private_key)):
        if text:
            try:
                parse(text, name)
            except keys.BadKey as exc:
                problems.append(f"{exc} ({KEYPAIR_HINT})")
    try:
        public_keys = keys.valid_public_keys(public_keys, "APP_SUPERVISOR_PUBLIC_KEYS key")
    except keys.BadKey as exc:
        problems.append(f"APP_SUPERVISOR_PUBLIC_KEYS: {exc}")
        public_keys = []
    return supervisor_key, tuple(public_keys), environment_key


def _time_zone(env, problems):
    """TZ, as the reference deployment sets it (e.g. Asia/Shanghai): an IANA name; UTC when unset."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = env.str("TZ", default="").strip().lstrip(":")
    if not name:
        return "UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"TZ={name!r} is not a time zone this system knows; give an IANA name, e.g. TZ=Europe/Paris "
                        "or TZ=UTC")
        return "UTC"
    return name


def cron_problem(expression):
    """Why EXPRESSION is not a cron expression croniter takes (five fields, e.g. "0 3 * * *"), or None."""
    from croniter import croniter

    if len(expression.split()) != 5 or not croniter.is_valid(expression):
        return f"{expression!r} is not a cron expression of five fields (minute hour day month weekday), e.g. 0 3 * * *"
    return None


def _backups(env, storage_dir, problems):
    """(schedule, keep, STORAGES["backups"]) from APP_BACKUP_SCHEDULE, APP_BACKUP_KEEP and APP_BACKUP_STORAGE."""
    schedule = " ".join(env.str("APP_BACKUP_SCHEDULE", default="").split())
    if schedule.lower() == "off":
        schedule = ""
    if schedule and cron_problem(schedule):
        problems.append(f"APP_BACKUP_SCHEDULE: {cron_problem(schedule)}, or leave it unset for no scheduled backups")
        schedule = ""
    keep = _whole(env, "APP_BACKUP_KEEP", DEFAULT_BACKUP_KEEP, 1, 100000, "backups kept per application", problems)
    kind = env.str("APP_BACKUP_STORAGE", default="filesystem").strip().lower()
    if kind not in BACKUP_STORAGES:
        problems.append(f"APP_BACKUP_STORAGE={kind!r} is not known; use filesystem (under APP_STORAGE_DIR/backups) "
                        "or s3 (with APP_BACKUP_S3_BUCKET)")
        kind = "filesystem"
    if kind == "filesystem":
        return schedule, keep, {"BACKEND": "django.core.files.storage.FileSystemStorage",
                                "OPTIONS": {"location": str(storage_dir / "backups")}}
    bucket = env.str("APP_BACKUP_S3_BUCKET", default="")
    if not bucket:
        problems.append("APP_BACKUP_STORAGE=s3 needs APP_BACKUP_S3_BUCKET, the bucket backups are stored in")
    options = {"bucket_name": bucket, "location": env.str("APP_BACKUP_S3_PREFIX", default="backups"),
               "default_acl": None, "querystring_auth": True, "file_overwrite": False}
    endpoint = env.str("APP_BACKUP_S3_ENDPOINT_URL", default="")
    if endpoint:
        problems.extend(filter(None, [_http_url_problem("APP_BACKUP_S3_ENDPOINT_URL", endpoint)]))
        options["endpoint_url"] = endpoint
    region = env.str("APP_BACKUP_S3_REGION", default="")
    if region:
        options["region_name"] = region
    # Credentials: boto3's own (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, an instance role).
    return schedule, keep, {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options}


def _seconds_or_zero(env, var, default, problems):
    """A number of seconds, where 0 (no wait) is allowed too."""
    if env.str(var, default="").strip() == "0":
        return 0.0
    return _seconds(env, var, default, problems)


def _flap_count(env, problems):
    """APP_ALERT_FLAP_COUNT: 0 (no grouping) or a whole number of status changes from 2 up."""
    raw = env.str("APP_ALERT_FLAP_COUNT", default="").strip()
    if raw == "":
        return DEFAULT_ALERT_FLAP_COUNT
    if not raw.isdigit() or int(raw) == 1:
        problems.append(f"APP_ALERT_FLAP_COUNT={raw!r} must be 0 (never group) or a whole number of status changes "
                        f"from 2 up; e.g. APP_ALERT_FLAP_COUNT={DEFAULT_ALERT_FLAP_COUNT}")
        return DEFAULT_ALERT_FLAP_COUNT
    return int(raw)


def _seconds(env, var, default, problems, whole=False):
    """A positive number of seconds; fractions allowed unless WHOLE."""
    raw = env.str(var, default="").strip()
    if raw == "":
        return default
    kind = "a whole number of seconds" if whole else "a positive number of seconds"
    try:
        value = (int if whole else float)(raw)
    except ValueError:
        problems.append(f"{var}={raw!r} is not {kind}; e.g. {var}={default:g}")
        return default
    if not 0 < value < float("inf"):
        problems.append(f"{var}={raw!r} must be {kind} above 0; e.g. {var}={default:g}")
        return default
    return value


SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE_RE = re.compile(r"^(\d+)\s*([KMGT]?)(?:I?B)?$", re.IGNORECASE)


def _byte_size(env, var, problems):
    """A positive number of bytes, or with a binary unit (100M = 100 MiB); None when unset."""
    raw = env.str(var, default="").strip()
    if raw == "":
        return None
    match = _SIZE_RE.match(raw)
    if not match or int(match.group(1)) == 0:
        problems.append(f"{var}={raw!r} is not a size above 0; give bytes or a number with K, M, G or T "
                        f"(powers of 1024), e.g. {var}=100M, or leave it unset for no limit")
        return None
    return int(match.group(1)) * SIZE_UNITS[match.group(2).upper()]


def _header_bytes(env, var, problems):
    raw = env.str(var, default="").strip()
    if raw == "":
        return DEFAULT_MAX_HEADER_BYTES
    match = _SIZE_RE.match(raw)
    size = int(match.group(1)) * SIZE_UNITS[match.group(2).upper()] if match else 0
    if not MIN_MAX_HEADER_BYTES <= size <= MAX_MAX_HEADER_BYTES:
        problems.append(f"{var}={raw!r} is not a size from {MIN_MAX_HEADER_BYTES // 1024}K to "
                        f"{MAX_MAX_HEADER_BYTES // 1024 ** 2}M; give bytes or a number with K or M (powers of 1024), "
                        f"e.g. {var}={DEFAULT_MAX_HEADER_BYTES // 1024}K")
        return DEFAULT_MAX_HEADER_BYTES
    return size


def _threads(env, var, problems):
    raw = env.str(var, default="").strip()
    if raw == "":
        return DEFAULT_WEB_THREADS
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_WEB_THREADS:
        problems.append(f"{var}={raw!r} is not a number of threads from 1 to {MAX_WEB_THREADS}; "
                        f"e.g. {var}={DEFAULT_WEB_THREADS}")
        return DEFAULT_WEB_THREADS
    return int(raw)


def _web_processes(env, mode, supervisor_redis, problems):
    """APP_WEB_PROCESSES: a whole number from 1 to MAX_WEB_PROCESSES, above 1 only where every process sees the same
    state: a single instance runs its lifecycle and holds its per-application locks in its one process, and an
    embedded Redis is started on first use by whichever process gets there first and stopped when that one exits,
    under the others' feet."""
    var = "APP_WEB_PROCESSES"
    raw = env.str(var, default="").strip()
    if raw == "":
        return DEFAULT_WEB_PROCESSES
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_WEB_PROCESSES:
        problems.append(f"{var}={raw!r} is not a number of processes from 1 to {MAX_WEB_PROCESSES}; "
                        f"e.g. {var}=2 on a machine with two cores")
        return DEFAULT_WEB_PROCESSES
    processes = int(raw)
    if processes > 1 and not mode and not any(p.startswith("APP_MODE=") for p in problems):
        problems.append(f"{var}={processes}: a single instance (APP_MODE unset) runs its applications' lifecycle in "
                        f"its one web process; use {var}=1, or run a supervisor and workers")
    elif processes > 1 and mode and not supervisor_redis:
        problems.append(f"{var}={processes} needs APP_SUPERVISOR_REDIS_URL: the embedded Redis belongs to the one "
                        f"process that started it; set it to a Redis server (redis://host:6379/0), or use {var}=1")
    return processes


def _whole(env, var, default, low, high, what, problems):
    """A whole number from LOW to HIGH; DEFAULT when unset."""
    raw = env.str(var, default="").strip()
    if raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        problems.append(f"{var}={raw!r} is not {what} from {low} to {high}; e.g. {var}={default}")
        return default
    return int(raw)


def _boolean(env, var, problems, default=False):
    raw = env.str(var, default="").strip().lower()
    if raw == "":
        return default
    if raw not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        problems.append(f"{var}={raw!r} is not a boolean; use true or false")
        return default
    return raw in ("1", "true", "yes", "on")


def _app_share(env, web_threads, problems):
    """APP_APP_CONCURRENCY, APP_APP_QUEUE, APP_APP_QUEUE_WAIT, APP_APP_TIMEOUT (workers.gate)."""
    concurrency = _whole(env, "APP_APP_CONCURRENCY", max(1, web_threads // 2), 1, web_threads,
                         "a number of concurrent requests per application (at most APP_WEB_THREADS)", problems)
    queue = _whole(env, "APP_APP_QUEUE", DEFAULT_APP_QUEUE, 0, MAX_APP_QUEUE,
                   "a number of requests waiting per application", problems)
    wait = _seconds(env, "APP_APP_QUEUE_WAIT", DEFAULT_APP_QUEUE_WAIT, problems)
    timeout = _whole(env, "APP_APP_TIMEOUT", DEFAULT_APP_TIMEOUT, 0, MAX_APP_TIMEOUT,
                     "a whole number of seconds (0: no timeout)", problems)
    return concurrency, queue, wait, timeout


def _networks(env, var, problems):
    """Comma-separated networks in CIDR notation (a bare address is a /32 or /128); None when unset."""
    raw = env.str(var, default="").strip()
    if raw == "":
        return None
    networks = []
    for part in (p.strip() for p in raw.split(",") if p.strip()):
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            problems.append(f"{var} lists {part!r}, which is not a network in CIDR notation; "
                            f"e.g. {var}=10.0.0.0/8,127.0.0.0/8")
    if not networks and not any(var in problem for problem in problems):
        problems.append(f"{var}={raw!r} names no network; list CIDRs, e.g. {var}=10.0.0.0/8, or leave it unset")
    return tuple(networks)


def _webhooks(env, var, problems):
    """Comma-separated http(s) URLs, each listed once."""
    urls = []
    for url in (part.strip() for part in env.str(var, default="").split(",") if part.strip()):
        if _http_url_problem(var, url):
            problems.append(f"{var} lists {url!r}, which is not an http(s) URL; list the receivers' addresses, "
                            f"e.g. {var}=https://hooks.example.com/appsup,http://alerts:8080/in")
        elif url in urls:
            problems.append(f"{var} lists {url!r} twice (it would get every alert twice); list each URL once")
        else:
            urls.append(url)
    return tuple(urls)


def _email(env, problems):
    """Django's EMAIL_* settings from EMAIL_URL (django-environ's e-mail URL), for the alerts' e-mail channels."""
    if not env.str("EMAIL_URL", default=""):
        return {}
    try:
        return env.email_url("EMAIL_URL")
    except (ImproperlyConfigured, ValueError) as exc:
        problems.append(f"EMAIL_URL is not an e-mail URL ({exc}); use e.g. smtp+tls://user:password@mail.example.com:587 "
                        "or consolemail://")
        return {}


def _is_module(path):
    try:
        return importlib.util.find_spec(path) is not None
    except (ImportError, ValueError):  # a missing parent package; a malformed name such as ".x"
        return False


def _hosted_apps(env, problems):
    """Dotted module paths of importable Django apps that are not installed already: Django stops with a
    traceback on a missing module or a repeated app label."""
    hosted = [path.strip() for path in env.list("APP_HOSTED_APPS", default=[]) if path.strip()]
    # provisioning.hosted_labels takes an app's label to be the last part of its path, as Django's default does.
    installed = {path.rsplit(".", 1)[-1]: path for path in BASE_INSTALLED_APPS}
    for path in hosted:
        label = path.rsplit(".", 1)[-1]
        other = installed.get(label)
        if path in BASE_INSTALLED_APPS:
            problems.append(
                f"APP_HOSTED_APPS lists {path!r}, which is always installed (and every hosted application gets "
                "auth, contenttypes, sessions and admin anyway); remove it from the list"
            )
        elif other == path:
            problems.append(f"APP_HOSTED_APPS lists {path!r} twice; list each app once")
        elif not _is_module(path):
            problems.append(
                f"APP_HOSTED_APPS lists {path!r}, which is not an importable module; "
                "give each app's dotted module path, e.g. django.contrib.sites"
            )
        elif other:
            problems.append(
                f"APP_HOSTED_APPS lists {path!r}, whose app label {label!r} is already taken by {other!r}; "
                "Django needs every app label to be unique"
            )
        installed.setdefault(label, path)
    return hosted


def _hosted_urlconf(env, problems):
    """The dotted path of an importable module, or "". Only whether it exists is checked here: importing it runs
    the operator's views, which need Django set up (workers/hosted_urls.py checks its urlpatterns then)."""
    path = env.str("APP_HOSTED_URLCONF", default="").strip()
    if path and not _is_module(path):
        problems.append(
            f"APP_HOSTED_URLCONF={path!r} is not an importable module; give the dotted module path of your "
            "URLconf, e.g. samples.notes.urls"
        )
    return path


# The web, the controller and commands such as ensureadmin write to one SQLite file: a transaction takes the write
# lock when it begins (IMMEDIATE) and waits for it, rather than failing "database is locked" when a deferred one
# cannot upgrade its read lock.
SQLITE_OPTIONS = {"transaction_mode": "IMMEDIATE", "timeout": 20}


def _database(env, storage_dir, mode, problems):
    if env.str("DATABASE_URL", default=""):
        try:
            database = env.db_url("DATABASE_URL")
        except Exception:  # django-environ raises several kinds for a bad URL
            database = {}
        if database.get("ENGINE") not in DIALECTS.values():  # django-environ returns {} for some bad URLs
            problems.append(
                "DATABASE_URL is not a PostgreSQL or SQLite URL; e.g. postgres://user:pass@host:5432/name"
            )
        elif database["ENGINE"] == DIALECTS["sqlite"]:
            # The same file, the same writers as with DB_DIALECT=sqlite: the same locking (options given in the
            # URL's query win).
            database["OPTIONS"] = {**SQLITE_OPTIONS, **database.get("OPTIONS", {})}
        return database
    dialect = env.str("DB_DIALECT", default="sqlite").lower()
    if dialect == "postgresql":
        dialect = "postgres"
    if dialect not in DIALECTS:
        problems.append(f"DB_DIALECT={dialect!r} is not supported; use postgres or sqlite")
        return {}
    if dialect == "sqlite":
        name = env.str("DB_DATABASE", default="") or str(storage_dir / f"{mode or 'single'}.sqlite3")
        return {"ENGINE": DIALECTS["sqlite"], "NAME": name, "OPTIONS": dict(SQLITE_OPTIONS)}
    name = env.str("DB_DATABASE", default="")
    if not name:
        problems.append("DB_DATABASE is required with DB_DIALECT=postgres; name this process's own database")
    port = env.str("DB_PORT", default="5432")
    if not port.isdigit():
        problems.append(f"DB_PORT={port!r} is not a port number")
    return {
        "ENGINE": DIALECTS["postgres"],
        "NAME": name,
        "HOST": env.str("DB_HOST", default="127.0.0.1"),
        "PORT": port,
        "USER": env.str("DB_USER", default="postgres"),
        "PASSWORD": env.str("DB_PASSWORD", default=""),
    }


def _single_instance_problems(name, supervisor_redis, command_redis):
    """What a single instance (APP_MODE unset) refuses: settings only a supervisor or a worker would use, which
    more likely mean a forgotten APP_MODE than a wish to have them ignored."""
    problems = []
    if name and name != SINGLE_ENVIRONMENT:
        problems.append(
            f"ENVIRONMENT_NAME={name!r} is for workers: a single instance (APP_MODE unset) hosts its applications on "
            f"its one environment, {SINGLE_ENVIRONMENT}; unset ENVIRONMENT_NAME, or set APP_MODE=worker"
        )
    for var, value in (("APP_SUPERVISOR_REDIS_URL", supervisor_redis), ("APP_COMMAND_REDIS_URL", command_redis)):
        if value and not _redis_url_problem(var, value):  # a malformed one is reported as that
            problems.append(
                f"{var} is set but APP_MODE is unset: a single instance uses no Redis; set APP_MODE=supervisor "
                f"(or worker) to use it, or unset {var}"
            )
    return problems


def _default_allowed_hosts(mode, apps_domain, supervisor_hosts):
    hosts = ["localhost", "127.0.0.1", "[::1]"]
    if apps_domain:
        # A worker answers its applications' own hosts; the supervisor receives them too and forwards them.
        hosts += [*supervisor_hosts, "." + apps_domain]
    return hosts


def load(environ_map=None):
    """Build the Config from ``environ_map`` (default: os.environ) or raise ConfigError."""
    env = environ.Env()
    if environ_map is not None:
        env.ENVIRON = environ_map
    problems = []

    mode = env.str("APP_MODE", default="").strip().lower()
    if mode not in MODES:
        problems.append(f"APP_MODE={mode!r} is not a role; use supervisor, worker, or leave it unset for a single instance")
        mode = ""

    expected_discovery = "remote" if mode else "local"
    discovery = env.str("APP_DISCOVERY_ADAPTER", default=expected_discovery).lower()
    if discovery not in ADAPTERS:
        problems.append(f"APP_DISCOVERY_ADAPTER={discovery!r} is not known; use remote or local")
    elif discovery != expected_discovery:
        reads = (f"a {mode} reads the configuration the supervisor caches in Redis" if mode
                 else "a single instance reads its configuration from its own database")
        problems.append(f"APP_DISCOVERY_ADAPTER={discovery} contradicts APP_MODE={mode or '(unset)'}: {reads}, "
                        f"so use APP_DISCOVERY_ADAPTER={expected_discovery}")
    expected_process = {"supervisor": "remote", "worker": "local", "": "local"}[mode]
    process = env.str("APP_PROCESS_ADAPTER", default=expected_process).lower()
    if process not in ADAPTERS:
        problems.append(f"APP_PROCESS_ADAPTER={process!r} is not known; use remote or local")
    elif process != expected_process:
        problems.append(
            f"APP_PROCESS_ADAPTER={process} contradicts APP_MODE={mode or '(unset)'}: "
            f"{'a supervisor sends commands to workers' if mode == 'supervisor' else 'this process runs applications itself'},"
            f" so use APP_PROCESS_ADAPTER={expected_process}"
        )

    # The seed misspells the variable; accept both, refuse a disagreement.
    adapter = env.str("APP_COMMAND_ADAPTER", default="")
    alias = env.str("APP_COMMAND_ADPATER", default="")
    if adapter and alias and adapter != alias:
        problems.append(
            f"APP_COMMAND_ADAPTER={adapter!r} and APP_COMMAND_ADPATER={alias!r} disagree; set only APP_COMMAND_ADAPTER"
        )
    adapter_var = "APP_COMMAND_ADAPTER" if adapter or not alias else "APP_COMMAND_ADPATER"
    adapter = (adapter or alias or "redis").lower()
    if adapter != "redis":
        problems.append(f"{adapter_var}={adapter!r} is not supported; the command channel is redis")

    supervisor_redis = env.str("APP_SUPERVISOR_REDIS_URL", default="")
    own_command_redis = env.str("APP_COMMAND_REDIS_URL", default="")
    command_redis = own_command_redis or supervisor_redis
    for var, value in (("APP_SUPERVISOR_REDIS_URL", supervisor_redis), ("APP_COMMAND_REDIS_URL", own_command_redis)):
        problem = _redis_url_problem(var, value)
        if problem:
            problems.append(problem)

    name = env.str("ENVIRONMENT_NAME", default="")
    url = env.str("ENVIRONMENT_URL", default="").rstrip("/")
    proxy_url = env.str("ENVIRONMENT_PROXY_URL", default="").rstrip("/")
    if not mode:
        if not any(p.startswith("APP_MODE=") for p in problems):  # a mistyped role is reported as that alone
            problems.extend(_single_instance_problems(name, supervisor_redis, own_command_redis))
        name = SINGLE_ENVIRONMENT
    if mode == "worker":
        if not name:
            problems.append("ENVIRONMENT_NAME is required with APP_MODE=worker; set it to this environment's id, e.g. env_a")
        elif not NAME_RE.match(name):
            problems.append(f"ENVIRONMENT_NAME={name!r} is not valid: use {NAME_RULE}")
        if not url:
            problems.append(
                "ENVIRONMENT_URL is required with APP_MODE=worker; set it to this worker's access URL, "
                "e.g. http://localhost:15000"
            )
        else:
            problems.append(_http_url_problem("ENVIRONMENT_URL", url))
        if proxy_url:
            problems.append(_http_url_problem("ENVIRONMENT_PROXY_URL", proxy_url))
    problems = [p for p in problems if p]

    interval = _seconds(env, "APP_HEARTBEAT_INTERVAL", DEFAULT_HEARTBEAT_INTERVAL, problems, whole=True)
    timeout = _seconds(env, "APP_HEARTBEAT_TIMEOUT", 2 * interval + 20, problems, whole=True)
    if timeout <= interval:
        problems.append(
            f"APP_HEARTBEAT_TIMEOUT={timeout} must be longer than APP_HEARTBEAT_INTERVAL={interval}, "
            "or every environment would flap offline between heartbeats"
        )

    proxy_connect_timeout = _seconds(env, "APP_PROXY_CONNECT_TIMEOUT", DEFAULT_PROXY_CONNECT_TIMEOUT, problems)
    proxy_read_timeout = _seconds(env, "APP_PROXY_READ_TIMEOUT", DEFAULT_PROXY_READ_TIMEOUT, problems)
    proxy_allowed_networks = _networks(env, "APP_PROXY_ALLOWED_NETWORKS", problems)
    proxy_max_body = _byte_size(env, "APP_PROXY_MAX_BODY", problems)
    web_threads = _threads(env, "APP_WEB_THREADS", problems)
    web_processes = _web_processes(env, mode, supervisor_redis, problems)
    app_concurrency, app_queue, app_queue_wait, app_timeout = _app_share(env, web_threads, problems)
    max_header_bytes = _header_bytes(env, "APP_MAX_HEADER_BYTES", problems)
    head_timeout = _seconds(env, "APP_HEAD_TIMEOUT", DEFAULT_HEAD_TIMEOUT, problems)
    alert_webhooks = _webhooks(env, "APP_ALERT_WEBHOOKS", problems)
    time_zone = _time_zone(env, problems)
    alert_stop_grace = _seconds_or_zero(env, "APP_ALERT_STOP_GRACE", DEFAULT_ALERT_STOP_GRACE, problems)
    alert_after = _seconds_or_zero(env, "APP_ALERT_AFTER", 0.0, problems)
    alert_flap_count = _flap_count(env, problems)
    alert_flap_window = _seconds(env, "APP_ALERT_FLAP_WINDOW", DEFAULT_ALERT_FLAP_WINDOW, problems)
    email = _email(env, problems)
    apps_domain, supervisor_hosts = _origins(env, mode, problems)
    signin_max_age = _whole(env, "APP_SIGNIN_MAX_AGE", DEFAULT_SIGNIN_MAX_AGE, 1, DEFAULT_SIGNIN_MAX_AGE,
                            "seconds a sign-in link stays valid", problems)
    audit_days = _whole(env, "APP_AUDIT_DAYS", DEFAULT_AUDIT_DAYS, 1, MAX_AUDIT_DAYS,
                        "a number of days to keep audit entries", problems)
    upgrade_concurrency = _whole(env, "APP_UPGRADE_CONCURRENCY", DEFAULT_UPGRADE_CONCURRENCY, 1,
                                 MAX_UPGRADE_CONCURRENCY, "a number of applications migrated at once per environment",
                                 problems)
    auto_upgrade = _boolean(env, "APP_AUTO_UPGRADE", problems)
    upgrade_backup = _boolean(env, "APP_UPGRADE_BACKUP", problems, default=True)

    storage_dir = Path(env.str("APP_STORAGE_DIR", default=str(BASE_DIR / "storage"))).resolve()
    database = _database(env, storage_dir, mode, problems)
    backup_schedule, backup_keep, backup_storage = _backups(env, storage_dir, problems)

    debug_raw = env.str("DEBUG", default="false").lower()
    if debug_raw not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        problems.append(f"DEBUG={debug_raw!r} is not a boolean; use true or false")
    debug = debug_raw in ("1", "true", "yes", "on")

    hosted_apps = _hosted_apps(env, problems)
    hosted_urlconf = _hosted_urlconf(env, problems)

    # Optional, and only the supervisor's: the key of the HMAC its alert webhooks carry (alerts.delivery). Nothing
    # between the supervisor and its workers is signed with it any more (exchange.keys).
    shared_secret = env.str("APP_SHARED_SECRET", default="")
    if shared_secret and len(shared_secret) < MIN_SHARED_SECRET:
        problems.append(f"APP_SHARED_SECRET is too short ({len(shared_secret)} characters): use at least "
                        f"{MIN_SHARED_SECRET} random characters, e.g. the output of `openssl rand -hex 32`, or unset "
                        "it (it only signs alert webhooks)")
    supervisor_key, supervisor_public_keys, environment_key = _signing_keys(env, mode, problems)
    trust_on_first_use = _boolean(env, "APP_TRUST_ON_FIRST_USE", problems)

    # Empty means "no bootstrap token": the API then answers only staff sessions (and per-user tokens), so the
    # supervisor stays reachable through the admin; a short one would be a superuser's password that can be guessed.
    api_token = env.str("SUPERVISOR_API_TOKEN", default="")
    if api_token and len(api_token) < MIN_API_TOKEN:
        problems.append(f"SUPERVISOR_API_TOKEN is too short ({len(api_token)} characters): use at least "
                        f"{MIN_API_TOKEN} random characters, e.g. the output of `openssl rand -hex 32`, or leave it "
                        "unset to turn bearer-token access off (staff sessions still work)")

    secret_key = env.str("SECRET_KEY", default="")
    if not secret_key:
        # Local use works on checkout; a deployment that forgets the key is told so (supervisor_project/checks.py).
        secret_key = INSECURE_SECRET_KEY

    if problems:
        raise ConfigError(problems)
    return Config(
        mode=mode,
        discovery_adapter=discovery,
        process_adapter=process,
        supervisor_redis_url=supervisor_redis,
        command_redis_url=command_redis,
        environment_name=name,
        environment_url=url,
        environment_proxy_url=proxy_url or url,
        heartbeat_interval=interval,
        heartbeat_timeout=timeout,
        api_token=api_token,
        storage_dir=storage_dir,
        database=database,
        secret_key=secret_key,
        debug=debug,
        hosted_apps=hosted_apps,
        hosted_urlconf=hosted_urlconf,
        allowed_hosts=env.list("ALLOWED_HOSTS", default=_default_allowed_hosts(mode, apps_domain, supervisor_hosts)),
        csrf_trusted_origins=env.list("CSRF_TRUSTED_ORIGINS", default=[]),
        max_header_bytes=max_header_bytes,
        head_timeout=head_timeout,
        proxy_connect_timeout=proxy_connect_timeout,
        proxy_read_timeout=proxy_read_timeout,
        shared_secret=shared_secret,
        supervisor_key=supervisor_key,
        supervisor_public_keys=supervisor_public_keys,
        environment_key=environment_key,
        trust_on_first_use=trust_on_first_use,
        proxy_allowed_networks=proxy_allowed_networks,
        proxy_max_body=proxy_max_body,
        alert_webhooks=alert_webhooks,
        alert_stop_grace=alert_stop_grace,
        alert_after=alert_after,
        alert_flap_count=alert_flap_count,
        alert_flap_window=alert_flap_window,
        time_zone=time_zone,
        email=email,
        default_from_email=env.str("DEFAULT_FROM_EMAIL", default=""),
        web_threads=web_threads,
        web_processes=web_processes,
        app_concurrency=app_concurrency,
        app_queue=app_queue,
        app_queue_wait=app_queue_wait,
        app_timeout=app_timeout,
        apps_domain=apps_domain,
        supervisor_hosts=supervisor_hosts,
        signin_max_age=signin_max_age,
        audit_days=audit_days,
        upgrade_concurrency=upgrade_concurrency,
        auto_upgrade=auto_upgrade,
        upgrade_backup=upgrade_backup,
        backup_schedule=backup_schedule,
        backup_keep=backup_keep,
        backup_storage=backup_storage,
    )
