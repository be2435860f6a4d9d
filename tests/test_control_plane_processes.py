"""The control plane end to end, as an operator runs it: a supervisor web process and two worker agents, talking
through a real Redis, driven over real HTTP and the documented commands."""

import signal
import time

import pytest
import requests

from workers import provisioning

from .conftest import free_port
from .processes import (
    PYTHON,
    Process,
    base_env,
    daphne,
    http_ready,
    manage,
    own_postgres_databases,
    postgres_env,
    runworker,
    wait_for,
    worker_env,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TOKEN = "integration-token"
INTERVAL, TIMEOUT = 1, 4


@pytest.fixture
def own_databases():
    with own_postgres_databases(["appsup_it_sup", "appsup_it_env_a", "appsup_it_env_b"]):
        yield


class Cluster:
    """A supervisor web and two workers (agent, and web when asked), configured the documented way."""

    def __init__(self, tmp_path, redis_url, worker_web=False, worker_overrides=None):
        self.tmp = tmp_path
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.supervisor_env = base_env(
            tmp_path / "supervisor", redis_url, APP_MODE="supervisor", SUPERVISOR_API_TOKEN=TOKEN,
            APP_HEARTBEAT_INTERVAL=INTERVAL, APP_HEARTBEAT_TIMEOUT=TIMEOUT, **postgres_env("appsup_it_sup"))
        self.worker_ports = {"env_a": free_port(), "env_b": free_port()}
        self.worker_envs = {
            name: worker_env(name, port, tmp_path / name, redis_url, APP_HEARTBEAT_INTERVAL=INTERVAL,
                             **postgres_env(f"appsup_it_{name}"), **(worker_overrides or {}).get(name, {}))
            for name, port in self.worker_ports.items()
        }
        self.worker_web = worker_web
        self.processes = []
        self.agents = {}
        self.webs = {}

    def start(self):
        manage(["migrate", "-v0"], self.supervisor_env)
        for env in self.worker_envs.values():
            manage(["migrate", "-v0"], env)
        self.supervisor = self._track(daphne(self.supervisor_env, self.port, self.tmp / "supervisor.log"))
        self.start_controller()
        for name in self.worker_envs:
            self.start_agent(name)
            if self.worker_web:
                self.webs[name] = self._track(
                    daphne(self.worker_envs[name], self.worker_ports[name], self.tmp / f"{name}-web.log"))
        wait_for(http_ready(f"{self.base}/admin/login/"), what="the supervisor web")
        for name in self.webs:
            wait_for(http_ready(f"http://127.0.0.1:{self.worker_ports[name]}/healthz"), what=f"{name} web")

    def start_controller(self):
        """``manage.py runsupervisor``: without it, what the API shows is never brought up to date."""
        self.controller = self._track(Process([PYTHON, "manage.py", "runsupervisor"], self.supervisor_env,
                                              self.tmp / f"controller-{len(self.processes)}.log"))
        return self.controller

    def start_agent(self, name):
        self.agents[name] = self._track(runworker(self.worker_envs[name], self.tmp / f"{name}-agent.log"))
        return self.agents[name]

    def _track(self, process):
        self.processes.append(process)
        return process

    def stop(self):
        for process in reversed(self.processes):
            process.stop()

    def api(self, method, path, **kwargs):
        headers = {"Authorization": f"Bearer {TOKEN}"}
        return requests.request(method, f"{self.base}/api/{path}", headers=headers, timeout=60, **kwargs)

    def environments(self):
        return {e["name"]: e for e in self.api("GET", "environments/").json()["environments"]}

    def status_of(self, name):
        return self.environments().get(name, {}).get("status")


@pytest.fixture
def cluster(tmp_path, redis_url, own_databases):
    c = Cluster(tmp_path, redis_url, worker_web=True)  # without its web, an environment is degraded
    try:
        c.start()
        yield c
    finally:
        c.stop()


def test_register_start_in_order_stop_lose_an_agent_and_get_it_back(cluster, tmp_path):
    # Both environments come online with their URLs and version.
    wait_for(lambda: {cluster.status_of("env_a"), cluster.status_of("env_b")} == {"online"}, what="registration")
    envs = cluster.environments()
    assert envs["env_a"]["url"] == cluster.worker_envs["env_a"]["ENVIRONMENT_URL"]
    assert envs["env_a"]["proxy_url"] == envs["env_a"]["url"]
    assert envs["env_b"]["version"]

    # The admin's static files are served by the supervisor itself.
    for asset in ("admin/css/base.css", "apps/admin.css"):
        assert requests.get(f"{cluster.base}/static/{asset}", timeout=10).status_code == 200

    # The API refuses missing and wrong credentials.
    assert requests.get(f"{cluster.base}/api/apps/", timeout=10).status_code == 401
    wrong = requests.get(f"{cluster.base}/api/apps/", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401

    # An application on both environments, env_b first.
    created = cluster.api("POST", "apps/", json={
        "name": "crm", "display_name": "CRM", "environments": ["env_b", "env_a"],
        "admin_username": "boss", "admin_password": "correct-horse-battery"})
    assert created.status_code == 201, created.text
    assert created.json()["environments"] == ["env_b", "env_a"]

    began = time.monotonic()
    started = cluster.api("POST", "apps/crm/start")
    fresh_start_seconds = time.monotonic() - began
    assert started.status_code == 200, started.text
    statuses = started.json()["statuses"]
    assert {env: s["state"] for env, s in statuses.items()} == {"env_a": "running", "env_b": "running"}
    assert statuses["env_b"]["at"] < statuses["env_a"]["at"]  # sequential, in the application's order
    _assert_database_with_superuser(cluster, "crm", "boss")

    stopped = cluster.api("POST", "apps/crm/stop")
    assert stopped.status_code == 200
    assert {s["state"] for s in stopped.json()["statuses"].values()} == {"stopped"}

    # The command line does the same sequential start, one line per environment.
    done = manage(["startapp_sequential", "crm", "--timeout", "60"], cluster.supervisor_env, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.index("env_b") < done.stdout.index("env_a")

    # An agent killed outright: its environment turns offline within the timeout…
    cluster.agents["env_b"].signal(signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: cluster.status_of("env_b") == "offline", timeout=TIMEOUT + 5, what="env_b offline")
    assert time.monotonic() - killed_at <= TIMEOUT + 2
    # …and a start fails fast, naming it.
    began = time.monotonic()
    refused = cluster.api("POST", "apps/crm/start")
    assert refused.status_code >= 400
    assert refused.json()["environment"] == "env_b"
    assert "offline" in refused.json()["error"]
    assert time.monotonic() - began < 3

    # A restarted agent is online again, and the start goes through.
    cluster.start_agent("env_b")
    wait_for(lambda: cluster.status_of("env_b") == "online", what="env_b back online")
    assert cluster.api("POST", "apps/crm/restart").status_code == 200

    # SIGTERM: the agent exits 0 and its environment is offline at once.
    cluster.agents["env_a"].signal(signal.SIGTERM)
    assert cluster.agents["env_a"].wait(15) == 0
    wait_for(lambda: cluster.status_of("env_a") == "offline", timeout=2, what="env_a offline on the controller's pass")

    print(f"\nfresh start of a two-environment app over the API: {fresh_start_seconds:.2f} s")


def _assert_database_with_superuser(cluster, app, username):
    import sqlite3

    if postgres_env("x"):
        from django.contrib.auth import get_user_model

        assert provisioning.database_exists(app)
        assert get_user_model().objects.using(provisioning.connect(app)).filter(
            username=username, is_superuser=True).exists()
        return
    for name in ("env_a", "env_b"):
        path = cluster.tmp / name / "apps" / f"{app}.sqlite3"
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT is_superuser FROM auth_user WHERE username = ?", [username]).fetchone() == (1,)
