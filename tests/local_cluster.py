"""A local cluster of real processes, configured the documented way: a supervisor web, its controller
(``runsupervisor``) and two workers (agent, and web when asked), talking through a real Redis."""

import requests

from .conftest import free_port
from .processes import (
    PYTHON,
    Process,
    base_env,
    http_ready,
    manage_each,
    postgres_env,
    runworker,
    stop_all,
    wait_for,
    web_process,
    worker_env,
)

TOKEN = "integration-token-0123456789abcd"
INTERVAL, TIMEOUT = 1, 4


DATABASES = ["appsup_it_sup", "appsup_it_env_a", "appsup_it_env_b"]  # on PostgreSQL, its own


class Cluster:
    """A supervisor web and two workers (agent, and web when asked), configured the documented way."""

    def __init__(self, tmp_path, redis_url, worker_web=False, worker_overrides=None, supervisor_overrides=None,
                 databases=DATABASES, supervisor_host=None):
        """DATABASES: the supervisor's, env_a's and env_b's on PostgreSQL (a test file run beside others on the
        same server names its own). SUPERVISOR_HOST: the Host the API is called with (APP_SUPERVISOR_HOSTS)."""
        self.tmp = tmp_path
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.supervisor_env = base_env(
            tmp_path / "supervisor", redis_url, APP_MODE="supervisor", SUPERVISOR_API_TOKEN=TOKEN,
            APP_HEARTBEAT_INTERVAL=INTERVAL, APP_HEARTBEAT_TIMEOUT=TIMEOUT, **postgres_env(databases[0]),
            **(supervisor_overrides or {}))
        self.worker_ports = {"env_a": free_port(), "env_b": free_port()}
        self.worker_envs = {
            name: worker_env(name, port, tmp_path / name, redis_url, APP_HEARTBEAT_INTERVAL=INTERVAL,
                             **postgres_env(database), **(worker_overrides or {}).get(name, {}))
            for (name, port), database in zip(self.worker_ports.items(), databases[1:])
        }
        self.worker_web = worker_web
        self.supervisor_host = supervisor_host
        self.processes = []
        self.agents = {}
        self.webs = {}

    def start(self):
        manage_each(["migrate", "-v0"], [self.supervisor_env, *self.worker_envs.values()])
        self.supervisor = self._track(web_process(self.supervisor_env, self.port, self.tmp / "supervisor.log"))
        self.start_controller()
        for name in self.worker_envs:
            self.start_agent(name)
            if self.worker_web:
                self.webs[name] = self._track(
                    web_process(self.worker_envs[name], self.worker_ports[name], self.tmp / f"{name}-web.log"))
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
        stop_all(self.processes)

    def api(self, method, path, **kwargs):
        headers = {"Authorization": f"Bearer {TOKEN}"}
        if self.supervisor_host:
            headers["Host"] = f"{self.supervisor_host}:{self.port}"
        return requests.request(method, f"{self.base}/api/{path}", headers=headers, timeout=60, **kwargs)

    def environments(self):
        return {e["name"]: e for e in self.api("GET", "environments/").json()["environments"]}

    def status_of(self, name):
        return self.environments().get(name, {}).get("status")
