"""Losing Redis fails no request of a running application (docs/architecture.md, "Convergence"), end to end.

Everything runs as deployed, configured by environment variables: a Redis server of the test's own (started without
persistence, so a restart loses everything; the shared test Redis is not used because this test kills its server),
a supervisor web (uvicorn, APP_MODE=supervisor) with its controller (`manage.py runsupervisor`), and environment env_a (a worker web under uvicorn and its `manage.py runworker` agent). An application is
created and started through the supervisor's JSON API; then a few threads load it through the supervisor's proxy
while Redis is (1) flushed, and (2) killed outright and started again a second later, empty.
"""

import threading
import time

import pytest
import redis as redis_lib
import requests

from bench.load import under_fault
from exchange import signing
from exchange.contract import APPS_KEY, CACHE_READY_KEY, ENVIRONMENTS_KEY, STATUSES_KEY, status_field

from .conftest import free_port
from .processes import (
    PYTHON,
    Process,
    RedisServer,
    base_env,
    http_ready,
    manage,
    own_postgres_databases,
    postgres_env,
    runworker,
    wait_for,
    web_process,
    worker_env,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TOKEN = "redis-loss-token-0123456789abcde"
INTERVAL, TIMEOUT = 1, 4
DATABASES = ["appsup_it_rl_sup", "appsup_it_rl_env_a"]
LOAD_SECONDS = 6.0
FAULT_AT = 2.0
THREADS = 4


@pytest.fixture
def own_databases():
    with own_postgres_databases(DATABASES + ["app_crm"]):
        yield


@pytest.fixture
def deployment(tmp_path, own_databases):
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(free_port(), workdir)
    server.start()
    port, worker_port = free_port(), free_port()
    supervisor_env = base_env(tmp_path / "supervisor", server.url, APP_MODE="supervisor", SUPERVISOR_API_TOKEN=TOKEN,
                              APP_HEARTBEAT_INTERVAL=INTERVAL, APP_HEARTBEAT_TIMEOUT=TIMEOUT,
                              **postgres_env(DATABASES[0]))
    env_a = worker_env("env_a", worker_port, tmp_path / "env_a", server.url, APP_HEARTBEAT_INTERVAL=INTERVAL,
                       APP_HEARTBEAT_TIMEOUT=TIMEOUT, **postgres_env(DATABASES[1]))
    processes = []
    try:
        manage(["migrate", "-v0"], supervisor_env)
        manage(["migrate", "-v0"], env_a)
        processes.append(web_process(supervisor_env, port, tmp_path / "supervisor-web.log"))
        processes.append(web_process(env_a, worker_port, tmp_path / "env_a-web.log"))
        processes.append(runworker(env_a, tmp_path / "env_a-agent.log"))
        processes.append(Process([PYTHON, "manage.py", "runsupervisor"], supervisor_env,
                                 tmp_path / "runsupervisor.log"))
        base = f"http://127.0.0.1:{port}"
        wait_for(http_ready(f"{base}/admin/login/"), what="the supervisor web")
        wait_for(http_ready(f"http://127.0.0.1:{worker_port}/healthz"), what="the worker web")
        yield {"base": base, "redis": server, "processes": processes}
    finally:
        for process in reversed(processes):
            process.stop()
        server.stop()


def api(base, method, path, **kwargs):
    return requests.request(method, f"{base}/api/{path}", headers={"Authorization": f"Bearer {TOKEN}"},
                            timeout=120, **kwargs)


def running_crm(base):
    """crm created and started through the API, on env_a; its login page's URL through the supervisor."""

    def env_a_online():
        listed = api(base, "GET", "environments/").json()["environments"]
        return any(e["name"] == "env_a" and e["status"] == "online" for e in listed)

    wait_for(env_a_online, what="env_a online")
    created = api(base, "POST", "apps/", json={"name": "crm", "display_name": "CRM", "environments": ["env_a"],
                                               "admin_username": "boss", "admin_password": "correct-horse-battery"})
    assert created.status_code == 201, created.text
    started = api(base, "POST", "apps/crm/start")
    assert started.status_code == 200, started.text
    return f"{base}/apps/crm/admin/login/"


def test_a_running_application_fails_no_request_when_redis_is_flushed_or_restarted_empty(deployment):
    base, server = deployment["base"], deployment["redis"]
    url = running_crm(base)
    wait_for(lambda: requests.get(url, timeout=10).status_code == 200, what="crm served through the supervisor")
    time.sleep(1.5)  # every process has read crm and subscribed to events

    client = redis_lib.Redis.from_url(server.url)
    started_at = signing.loads(client.hget(STATUSES_KEY, status_field("crm", "env_a")))["at"]
    flushed = under_fault(url, client.flushall, seconds=LOAD_SECONDS, fault_at=FAULT_AT, threads=THREADS)
    client.close()

    def restart_empty():
        server.kill()
        time.sleep(1.0)
        server.start()

    restarted = under_fault(url, restart_empty, seconds=LOAD_SECONDS, fault_at=FAULT_AT, threads=THREADS)

    print(f"\nFLUSHALL: {flushed.requests} requests, {len(flushed.failures)} failed {flushed.failures[:10]}"
          f"\nredis-server SIGKILL + restart empty after 1 s: {restarted.requests} requests, "
          f"{len(restarted.failures)} failed {restarted.failures[:10]}")
    assert flushed.requests > 50 and restarted.requests > 50
    assert flushed.failures == []
    assert restarted.failures == []

    # Afterwards the application is still served, the cache is whole again, the agent published its registration
    # and the state it holds in its own database again, and nothing was started (migrated) again.
    assert requests.get(url, timeout=10).status_code == 200
    check = redis_lib.Redis.from_url(server.url)
    wait_for(lambda: check.exists(CACHE_READY_KEY) and check.hexists(APPS_KEY, "crm"), timeout=10,
             what="the configuration cache rebuilt")
    wait_for(lambda: check.hexists(ENVIRONMENTS_KEY, "env_a") and check.hexists(STATUSES_KEY, "crm/env_a"),
             timeout=5, what="env_a's registration and crm's state published again")
    again = signing.loads(check.hget(STATUSES_KEY, status_field("crm", "env_a")))
    assert again["state"] == "running" and again["at"] == started_at
    check.close()
    for web in deployment["processes"][:2]:  # the supervisor's and the worker's web
        assert "Traceback" not in web.output(), web.output()


def test_a_stop_answers_503_on_the_very_next_request_and_a_start_200(deployment):
    base = deployment["base"]
    url = running_crm(base)
    http = requests.Session()
    assert http.get(url, timeout=10).status_code == 200
    for _ in range(3):
        assert api(base, "POST", "apps/crm/stop").status_code == 200
        assert http.get(url, timeout=10).status_code == 503
        assert api(base, "POST", "apps/crm/start").status_code == 200
        assert http.get(url, timeout=10).status_code == 200


def test_a_hung_redis_fails_no_request_and_costs_one_at_most_half_a_second(deployment):
    import os
    import signal

    base, server = deployment["base"], deployment["redis"]
    url = running_crm(base)
    wait_for(lambda: requests.get(url, timeout=10).status_code == 200, what="crm served through the supervisor")

    def hang():  # Redis stops answering but keeps its connections: no error, only silence
        os.kill(server.proc.pid, signal.SIGSTOP)
        threading.Timer(4.0, os.kill, (server.proc.pid, signal.SIGCONT)).start()

    seen = under_fault(url, hang, seconds=7.0, fault_at=FAULT_AT, threads=THREADS)
    print(f"\nRedis hung for 4 s: {seen.requests} requests, {len(seen.failures)} failed, the slowest took "
          f"{seen.slowest:.2f} s")
    assert seen.requests > 50 and seen.failures == []
    # The supervisor's and the worker's lookups each give up after LOOKUP_TIMEOUT (0.25 s) and answer the last view;
    # concurrent misses share one lookup. (1.03 s when each hop gave half a second.)
    assert seen.slowest < 0.8
