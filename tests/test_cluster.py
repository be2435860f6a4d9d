"""The local cluster (cluster.launcher, run by bin/cluster): real processes, real HTTP.

The slow tests start the whole cluster on free ports with its own storage directory, so they never collide with a
cluster a developer is running on 14000.
"""

import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from cluster import launcher as cluster
from supervisor_project.config import BASE_DIR

START_TIMEOUT = 180
STOP_TIMEOUT = 60


# -- the plan, without processes -----------------------------------------------------------------------------------


def test_the_default_plan_is_the_reference_one():
    names = cluster.environment_names(2)
    assert names == ["env_a", "env_b"]
    assert cluster.plan_ports(14000, names) == {"supervisor": 14000, "env_a": 15000, "env_b": 16000}


def test_more_environments_and_another_base_port():
    names = cluster.environment_names(3)
    assert cluster.plan_ports(20000, names) == {"supervisor": 20000, "env_a": 21000, "env_b": 22000, "env_c": 23000}
    with pytest.raises(cluster.ClusterError):
        cluster.environment_names(0)
    with pytest.raises(cluster.ClusterError):
        cluster.plan_ports(64000, names)


def test_the_callers_configuration_does_not_leak_into_the_children(tmp_path):
    caller = {"DATABASE_URL": "postgres://x/y", "DB_DIALECT": "postgres", "APP_MODE": "worker", "PATH": "/bin"}
    common = cluster.base_environ(caller)
    assert common == {"PATH": "/bin"}
    ports = {"supervisor": 14000, "env_a": 15000, "env_b": 16000}
    supervisor = cluster.role_environ(common, "supervisor", tmp_path, ports, token="t" * 32)
    assert supervisor["APP_MODE"] == "supervisor" and supervisor["SUPERVISOR_API_TOKEN"] == "t" * 32
    assert supervisor["APP_STORAGE_DIR"] == str(tmp_path / "supervisor")
    assert supervisor["DB_DATABASE"] == str(tmp_path / "supervisor" / "supervisor.sqlite3")
    worker = cluster.role_environ(common, "env_a", tmp_path, ports)
    assert (worker["ENVIRONMENT_NAME"], worker["ENVIRONMENT_URL"]) == ("env_a", "http://127.0.0.1:15000")
    assert worker["DB_DIALECT"] == "sqlite" and "DATABASE_URL" not in worker
    assert worker["DB_DATABASE"] == str(tmp_path / "env_a" / "worker.sqlite3")
    # hosted applications' databases: one per application, whichever environment opens it
    assert worker["APP_STORAGE_DIR"] == cluster.role_environ(common, "env_b", tmp_path, ports)["APP_STORAGE_DIR"]


def test_workers_host_the_sample_app_unless_the_caller_names_its_own_code(tmp_path):
    ports = {"supervisor": 14000, "env_a": 15000}

    def hosted(caller, role="env_a"):
        env = cluster.role_environ(cluster.base_environ(caller), role, tmp_path, ports)
        return {var: env[var] for var in ("APP_HOSTED_APPS", "APP_HOSTED_URLCONF") if var in env}

    sample = {"APP_HOSTED_APPS": "samples.notes", "APP_HOSTED_URLCONF": "samples.notes.urls"}
    assert hosted({}) == sample
    assert hosted({"APP_HOSTED_APPS": "crm", "APP_HOSTED_URLCONF": "crm.urls"}) == {
        "APP_HOSTED_APPS": "crm", "APP_HOSTED_URLCONF": "crm.urls"}
    assert hosted({"APP_HOSTED_APPS": "crm"}) == {"APP_HOSTED_APPS": "crm"}  # never the sample's URLconf without it
    assert hosted({"APP_HOSTED_APPS": ""}) == {"APP_HOSTED_APPS": ""}  # set empty: the admin alone
    # The supervisor hosts no application: it gets neither, whatever the caller sets.
    assert hosted({}, role="supervisor") == hosted(sample, role="supervisor") == {}


def test_every_role_configuration_validates(tmp_path):
    from supervisor_project.config import load

    common = dict(cluster.base_environ({}), APP_SUPERVISOR_REDIS_URL="unix:///tmp/r.sock", APP_HEARTBEAT_INTERVAL="5",
                  APP_SHARED_SECRET="0123456789abcdef0123456789abcdef")
    ports = cluster.plan_ports(14000, ["env_a"])
    private_keys = {"supervisor": cluster.new_private_key(), "env_a": cluster.new_private_key()}
    supervisor = cluster.role_environ(common, "supervisor", tmp_path, ports, "t" * 32, private_keys)
    assert load(supervisor).heartbeat_timeout == 30
    worker = cluster.role_environ(common, "env_a", tmp_path, ports, private_keys=private_keys)
    assert load(worker).environment_name == "env_a"
    # A worker gets its own key and the supervisor's public key: never the supervisor's private key, nor the
    # alert webhooks' key.
    assert worker["APP_ENVIRONMENT_KEY"] == private_keys["env_a"] and "APP_SUPERVISOR_KEY" not in worker
    assert worker["APP_SUPERVISOR_PUBLIC_KEYS"] == cluster.public_key_of(private_keys["supervisor"])
    assert "APP_SHARED_SECRET" not in worker and supervisor["APP_SHARED_SECRET"]


@pytest.mark.parametrize("option", [["--stop-timeout", "-1"], ["--stop-timeout", "nan"], ["--heartbeat-interval", "0"]])
def test_bad_options_are_refused_naming_them(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as exited:
        cluster.main(["--storage", str(tmp_path), *option])
    assert exited.value.code == 2
    assert option[0] in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


def test_postgres_puts_each_roles_database_on_the_server_and_the_workers_share_it(tmp_path):
    from supervisor_project.config import load

    server, prefix = cluster.parse_postgres("postgresql://ops:s%40cret@db.internal:6543/trial")
    assert server == {"DB_HOST": "db.internal", "DB_PORT": "6543", "DB_USER": "ops", "DB_PASSWORD": "s@cret"}
    assert prefix == "trial"
    assert cluster.parse_postgres("postgres://postgres@127.0.0.1")[1] == cluster.DEFAULT_POSTGRES_PREFIX
    common = dict(cluster.base_environ({}), APP_SUPERVISOR_REDIS_URL="unix:///tmp/r.sock")
    ports = cluster.plan_ports(14000, ["env_a"])
    private_keys = {"supervisor": cluster.new_private_key(), "env_a": cluster.new_private_key()}
    for role, database in (("supervisor", "trial_supervisor"), ("env_a", "trial_env_a")):
        env = cluster.role_environ(common, role, tmp_path, ports, "t" * 32, private_keys, postgres=(server, prefix))
        assert env["DB_DIALECT"] == "postgres" and env["DB_DATABASE"] == database
        assert load(env).database["ENGINE"] == "django.db.backends.postgresql"


@pytest.mark.parametrize("url, problem", [
    ("mysql://root@127.0.0.1/x", "scheme must be postgresql://"),
    ("postgresql://root@:5432", "names no host"),
    ("postgresql://root@127.0.0.1:99999", "port is not a number"),
    ("postgresql://127.0.0.1", "names no user"),
    ("postgresql://root@127.0.0.1/bad-prefix", "letters, digits and _"),
])
def test_a_malformed_postgres_url_is_refused_naming_what_is_wrong_and_nothing_starts(tmp_path, capsys, url, problem):
    assert cluster.main(["--storage", str(tmp_path / "s"), "--postgres", url]) == 2
    assert problem in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def postgres_server():
    """DB_* of the PostgreSQL server the machine runs (the test run's own when it uses one), or skip."""
    psycopg = pytest.importorskip("psycopg")
    server = {"DB_HOST": os.environ.get("DB_HOST") or "127.0.0.1", "DB_PORT": os.environ.get("DB_PORT") or "5432",
              "DB_USER": os.environ.get("DB_USER") or "postgres", "DB_PASSWORD": os.environ.get("DB_PASSWORD") or ""}
    try:
        psycopg.connect(host=server["DB_HOST"], port=server["DB_PORT"], user=server["DB_USER"],
                        password=server["DB_PASSWORD"] or None, dbname="postgres", connect_timeout=3).close()
    except psycopg.Error as exc:
        pytest.skip(f"no PostgreSQL server at {server['DB_HOST']}:{server['DB_PORT']}: {exc}")
    return server


def drop_postgres_databases(server, names):
    import psycopg

    with psycopg.connect(host=server["DB_HOST"], port=server["DB_PORT"], user=server["DB_USER"],
                         password=server["DB_PASSWORD"] or None, dbname="postgres", autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_databases(server):
    import psycopg

    with psycopg.connect(host=server["DB_HOST"], port=server["DB_PORT"], user=server["DB_USER"],
                         password=server["DB_PASSWORD"] or None, dbname="postgres") as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}


def test_the_roles_postgres_databases_are_created_once_and_an_unreachable_server_is_named(tmp_path):
    server = postgres_server()
    names = [f"clutest{os.getpid()}_supervisor", f"clutest{os.getpid()}_env_a"]
    try:
        cluster.create_postgres_databases(server, names)
        cluster.create_postgres_databases(server, names)  # there already: kept
        assert set(names) <= postgres_databases(server)
    finally:
        drop_postgres_databases(server, names)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(cluster.ClusterError, match=f"PostgreSQL at 127.0.0.1:{port} \\(--postgres\\)"):
        cluster.create_postgres_databases(dict(server, DB_HOST="127.0.0.1", DB_PORT=str(port)), names)


def test_secrets_are_created_once(tmp_path):
    path = tmp_path / "secret.txt"
    first = cluster.read_or_create_secret(path, lambda: "one")
    assert cluster.read_or_create_secret(path, lambda: "two") == first == "one"
    assert path.stat().st_mode & 0o777 == 0o600


def _manage(storage, *args):
    return subprocess.run([sys.executable, "-m", "cluster", "manage", "--storage", str(storage),
                           *args], cwd=BASE_DIR, capture_output=True, text=True, timeout=120)


def test_manage_runs_a_command_with_the_roles_variables(tmp_path):
    common = dict(cluster.base_environ({"PATH": os.environ["PATH"]}), APP_SHARED_SECRET="s" * 64,
                  APP_SUPERVISOR_REDIS_URL="redis://127.0.0.1:1/0")
    ports = {"supervisor": 14000, "env_a": 15000}
    private_keys = {"supervisor": cluster.new_private_key(), "env_a": cluster.new_private_key()}
    for role in ports:
        cluster.write_environ(tmp_path, role, cluster.role_environ(common, role, tmp_path, ports, "t" * 40,
                                                                   private_keys))
    assert oct((tmp_path / "supervisor" / cluster.ENVIRON_FILE).stat().st_mode & 0o777) == "0o600"  # secrets

    shown = _manage(tmp_path, "env_a", "shell", "-c",
                    "from django.conf import settings; print(settings.APP_MODE, settings.DATABASES['default']['NAME'])")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip().splitlines()[-1].split() == ["worker", str(tmp_path / "env_a" / "worker.sqlite3")]


def test_manage_names_the_known_roles_when_asked_for_another(tmp_path):
    cluster.write_environ(tmp_path, "supervisor", {"APP_MODE": "supervisor"})
    wrong = _manage(tmp_path, "env_z", "check")
    assert wrong.returncode == 2 and "unknown role 'env_z'" in wrong.stderr and "supervisor" in wrong.stderr
    nothing = _manage(tmp_path / "elsewhere", "supervisor", "check")
    assert nothing.returncode == 2 and "start one with bin/cluster" in nothing.stderr
    assert _manage(tmp_path, "supervisor").returncode == 2  # no command


def test_a_taken_port_is_named_and_nothing_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "cluster", "--storage", str(tmp_path / "s"), "--base-port",
             str(port), "--envs", "1"],
            cwd=BASE_DIR, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 2
    assert f"port {port} is not free" in result.stdout and "the supervisor needs it" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "s").exists()


# -- the real cluster ----------------------------------------------------------------------------------------------


def _free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base_port(envs=2):
    for _ in range(200):
        base = random.randrange(20000, 60000 - cluster.PORT_STEP * envs)
        if all(_free(base + cluster.PORT_STEP * n) for n in range(envs + 1)):
            return base
    raise RuntimeError("no free ports")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class RunningCluster:
    def __init__(self, tmp_path):
        self.storage = tmp_path / "storage"
        self.log = tmp_path / "cluster.log"
        self.base_port = free_base_port()
        env = cluster.base_environ()  # the embedded Redis and SQLite, whatever the suite runs against
        env.update(NO_COLOR="1", PYTHONUNBUFFERED="1")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cluster", "--storage", str(self.storage),
                 "--base-port", str(self.base_port)],
                cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        self.state = None

    def output(self):
        return self.log.read_text(errors="replace")

    def wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        state_file = self.storage / "cluster.json"
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the cluster exited ({self.proc.returncode}):\n{self.output()}"
            if state_file.exists():
                try:
                    state = json.loads(state_file.read_text())
                except ValueError:
                    state = {}
                if state.get("ready"):
                    self.state = state
                    return state
            time.sleep(0.2)
        pytest.fail(f"the cluster was not ready after {START_TIMEOUT} s:\n{self.output()}")

    def wait_exit(self):
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the cluster did not stop within {STOP_TIMEOUT} s:\n{self.output()}")

    def kill(self):
        """Last resort for a failed test: nothing may outlive it."""
        pids = list((self.state or {}).get("processes", {}).values())
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for pid in pids:
            if _group_alive(pid):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def running_cluster(tmp_path):
    running = RunningCluster(tmp_path)
    try:
        yield running
    finally:
        running.kill()


def _api(state, method, path, **kwargs):
    return requests.request(
        method,
        f"{state['supervisor_url']}/api/{path}",
        headers={"Authorization": f"Bearer {state['api_token']}"},
        timeout=kwargs.pop("timeout", 30),
        **kwargs,
    )


def _environments_online(state):
    """The environments the JSON API shows online."""
    response = _api(state, "GET", "environments/")
    assert response.status_code == 200, response.text
    return {e["name"] for e in response.json()["environments"] if e["status"] == "online"}


def _admin_login(base_url, password):
    session = requests.Session()
    page = session.get(f"{base_url}/admin/login/", timeout=10)
    assert page.status_code == 200
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    response = session.post(
        f"{base_url}/admin/login/?next=/admin/",
        data={"csrfmiddlewaretoken": csrf, "username": "admin", "password": password, "next": "/admin/"},
        timeout=10,
    )
    return response


@pytest.mark.slow
def test_the_cluster_starts_serves_and_stops_everything(running_cluster):
    state = running_cluster.wait_ready()
    base = state["supervisor_url"]
    assert base == f"http://127.0.0.1:{running_cluster.base_port}"
    assert set(state["processes"]) == {
        "redis", "supervisor", "supervisor.controller", "env_a.web", "env_a.agent", "env_b.web", "env_b.agent",
    }
    pids = list(state["processes"].values())
    assert all(_alive(pid) for pid in pids)
    output = running_cluster.output()
    assert state["api_token"] in output and f"{base}/admin/" in output

    # the supervisor answers, with the admin whose password the cluster printed and kept
    password = (running_cluster.storage / "admin-password.txt").read_text().strip()
    assert f"admin / {password}" in output
    response = _admin_login(base, password)
    assert response.status_code == 200 and response.url == f"{base}/admin/", response.url
    assert _admin_login(base, "wrong-password").url.startswith(f"{base}/admin/login/")

    # both environments registered and online; their web processes answer
    deadline = time.monotonic() + 30
    while _environments_online(state) != {"env_a", "env_b"}:
        assert time.monotonic() < deadline, _environments_online(state)
        time.sleep(0.5)
    for name, url in state["environments"].items():
        assert url == f"http://127.0.0.1:{running_cluster.base_port + cluster.PORT_STEP * (1 + 'ab'.index(name[-1]))}"
        health = requests.get(f"{url}/healthz", timeout=10)
        assert health.status_code == 200 and health.json()["environment"] == name
        assert requests.get(f"{url}/admin/login/", timeout=10).status_code == 404  # not the supervisor's admin

    # a management command run as the cluster runs them reaches its Redis and database, no variable to set
    assert "bin/cluster manage supervisor" in output
    pinged = _manage(running_cluster.storage, "supervisor", "shell", "-c",
                     "from exchange.redis_client import supervisor_redis; from django.contrib.auth.models import User; "
                     "print(supervisor_redis().ping(), User.objects.filter(username='admin').exists())")
    assert pinged.returncode == 0 and pinged.stdout.strip().splitlines()[-1] == "True True", pinged.stderr

    # an application placed on both environments starts on both, with one database (the workers share it)
    if _api(state, "GET", "apps/").status_code == 200:
        created = _api(
            state, "POST", "apps/",
            json={"name": "crm", "display_name": "CRM", "environments": ["env_a", "env_b"],
                  "admin_username": "admin", "admin_password": "a-long-password"},
        )  # fmt: skip
        assert created.status_code == 201, created.text
        started = _api(state, "POST", "apps/crm/start", timeout=150)
        assert started.status_code == 200, started.text
        assert {env: s["state"] for env, s in started.json()["statuses"].items()} == {
            "env_a": "running",
            "env_b": "running",
        }
        assert (running_cluster.storage / "workers" / "apps" / "crm.sqlite3").exists()
        assert not (running_cluster.storage / "env_a" / "apps").exists()
        # opening it shows the sample business application, which asks for crm's own login
        opened = requests.get(f"{base}/apps/crm/?_env=env_a", allow_redirects=False, timeout=10)
        assert opened.status_code == 302, opened.text
        assert opened.headers["Location"].endswith("/apps/crm/admin/login/?next=/apps/crm/")
        assert requests.get(f"{base}/apps/crm/static/notes/notes.css?_env=env_a", timeout=10).status_code == 200

    # Ctrl-C: everything stops, agents deregister, exit status 0
    running_cluster.proc.send_signal(signal.SIGINT)
    assert running_cluster.wait_exit() == 0, running_cluster.output()
    assert [pid for pid in pids if _alive(pid) or _group_alive(pid)] == []
    output = running_cluster.output()
    assert "environment env_a deregistered" in output and "environment env_b deregistered" in output
    assert output.index("stopping env_a.web") < output.index("stopping supervisor") < output.index("stopping redis")
    assert not (running_cluster.storage / "cluster.json").exists()
    assert (running_cluster.storage / "supervisor" / "supervisor.sqlite3").exists()
    assert (running_cluster.storage / "env_a" / "worker.sqlite3").exists()


@pytest.mark.slow
def test_the_supervisor_dying_stops_the_cluster_with_an_error(running_cluster):
    state = running_cluster.wait_ready()
    pids = list(state["processes"].values())
    os.kill(state["processes"]["supervisor"], signal.SIGKILL)
    assert running_cluster.wait_exit() == 1
    output = running_cluster.output()
    assert "supervisor (pid" in output and "was killed by SIGKILL unexpectedly; stopping the cluster" in output
    assert [pid for pid in pids if _alive(pid) or _group_alive(pid)] == []
    assert "environment env_a deregistered" in output


def _state(running_cluster):
    return json.loads((running_cluster.storage / "cluster.json").read_text())


def _last_heartbeat(state, name):
    """NAME's last heartbeat as the supervisor shows it (epoch seconds; 0 when none)."""
    from datetime import datetime

    listed = {e["name"]: e for e in _api(state, "GET", "environments/").json()["environments"]}
    at = (listed.get(name) or {}).get("last_heartbeat_at")
    return datetime.fromisoformat(at).timestamp() if at else 0


@pytest.mark.slow
def test_a_dead_agent_leaves_the_rest_running_and_sigusr1_starts_it_again(running_cluster):
    state = running_cluster.wait_ready()
    killed = state["processes"]["env_b.agent"]
    os.kill(killed, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while f"To start it again: kill -USR1 {running_cluster.proc.pid}" not in running_cluster.output():
        assert time.monotonic() < deadline, running_cluster.output()
        time.sleep(0.1)
    assert "env_b.agent (pid" in running_cluster.output()
    assert running_cluster.proc.poll() is None
    assert requests.get(f"{state['supervisor_url']}/admin/login/", timeout=10).status_code == 200

    asked_at = time.time()
    running_cluster.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while _state(running_cluster)["processes"]["env_b.agent"] == killed:
        assert time.monotonic() < deadline, running_cluster.output()
        time.sleep(0.1)
    restarted = _state(running_cluster)["processes"]["env_b.agent"]
    assert _alive(restarted)
    # The new agent registers again.
    deadline = time.monotonic() + 30
    while _last_heartbeat(state, "env_b") < asked_at:
        assert time.monotonic() < deadline, running_cluster.output()
        time.sleep(0.2)

    pids = list(_state(running_cluster)["processes"].values())
    running_cluster.proc.send_signal(signal.SIGINT)
    assert running_cluster.wait_exit() == 0, running_cluster.output()
    assert [pid for pid in pids if _alive(pid) or _group_alive(pid)] == []


@pytest.mark.slow
def test_a_cluster_on_postgres_hosts_its_applications_databases_there(tmp_path):
    server = postgres_server()
    prefix, app = f"clutest{os.getpid()}", f"pgc{os.getpid()}"
    url = f"postgresql://{server['DB_USER']}:{server['DB_PASSWORD']}@{server['DB_HOST']}:{server['DB_PORT']}/{prefix}"
    log_path = tmp_path / "cluster.log"
    env = dict(cluster.base_environ(), NO_COLOR="1", PYTHONUNBUFFERED="1")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cluster", "--storage", str(tmp_path / "storage"), "--base-port",
             str(free_base_port(1)), "--envs", "1", "--postgres", url],
            cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        state_file = tmp_path / "storage" / "cluster.json"
        deadline = time.monotonic() + START_TIMEOUT
        state = {}
        while not state.get("ready"):
            assert proc.poll() is None, f"the cluster exited ({proc.returncode}):\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"not ready after {START_TIMEOUT} s:\n{log_path.read_text()}"
            time.sleep(0.2)
            with contextlib.suppress(OSError, ValueError):
                state = json.loads(state_file.read_text())
        assert {f"{prefix}_supervisor", f"{prefix}_env_a"} <= postgres_databases(server)
        assert not list((tmp_path / "storage").rglob("*.sqlite3"))  # nothing on SQLite
        created = _api(state, "POST", "apps/", json={
            "name": app, "display_name": app, "environments": ["env_a"], "admin_username": "admin",
            "admin_password": "a-long-password"})
        assert created.status_code == 201, created.text
        started = _api(state, "POST", f"apps/{app}/start", timeout=150)
        assert started.status_code == 200 and started.json()["statuses"]["env_a"]["state"] == "running", started.text
        assert f"app_{app}" in postgres_databases(server)
        backup = _api(state, "POST", f"apps/{app}/backups", timeout=150)
        assert backup.status_code == 201 and backup.json()["size"] > 0, backup.text  # pg_dump on the worker
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(STOP_TIMEOUT) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in (state or {}).get("processes", {}).values():
            if _group_alive(pid):
                os.killpg(pid, signal.SIGKILL)
        drop_postgres_databases(server, [f"{prefix}_supervisor", f"{prefix}_env_a", f"app_{app}"])
