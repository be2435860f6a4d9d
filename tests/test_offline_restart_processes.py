"""A restart asked for while an environment is offline runs exactly once after it is back, with real processes:
a supervisor web, its controller (runsupervisor) and worker agents on the real test Redis."""

import signal
import time

import pytest
import redis

from exchange import contract, status

from .local_cluster import Cluster
from .processes import own_postgres_databases, wait_for

# Its own PostgreSQL databases, and application names (so hosted databases app_<name>) no other test file uses:
# other test files may run at the same time on the same server.
DATABASES = ["appsup_restart_sup", "appsup_restart_env_a", "appsup_restart_env_b"]

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def cluster(tmp_path, redis_url):
    with own_postgres_databases(DATABASES):
        yield from _cluster(tmp_path, redis_url)


def _cluster(tmp_path, redis_url):
    c = Cluster(tmp_path, redis_url, databases=DATABASES)
    try:
        c.start()
        wait_for(lambda: {c.status_of("env_a"), c.status_of("env_b")} <= {"online", "degraded"}
                 and c.status_of("env_a") is not None and c.status_of("env_b") is not None,
                 what="both environments registered")
        yield c
    finally:
        c.stop()


def reported(r, app, env):
    return status.decode(r.hget(contract.STATUSES_KEY, contract.status_field(app, env)), app, env) or {}


def restart_jobs(r, app, env):
    """The restart commands ever sent to ENV for APP (RQ keeps a job an hour after it ran)."""
    return r.keys(f"rq:job:{contract.RESTART}-{app}-{env}-*")


def test_offline_restart_runs_once_when_back(cluster, redis_url):
    r = redis.Redis.from_url(redis_url)
    created = cluster.api("POST", "apps/", json={
        "name": "rs_crm", "environments": ["env_a"], "admin_username": "boss", "admin_password": "correct-horse-battery"})
    assert created.status_code == 201, created.text
    assert cluster.api("POST", "apps/rs_crm/start").status_code == 200
    cluster.agents["env_a"].signal(signal.SIGTERM)  # a graceful stop: offline at once
    assert cluster.agents["env_a"].wait(15) == 0
    wait_for(lambda: cluster.status_of("env_a") == "offline", timeout=5, what="env_a offline")
    before = reported(r, "rs_crm", "env_a")["at"]

    waiting = cluster.api("POST", "apps/rs_crm/restart?timeout=10")

    assert waiting.status_code == 202, waiting.text
    assert waiting.json()["environment"] == "env_a"
    assert "waits for env_a" in waiting.json()["message"]
    assert restart_jobs(r, "rs_crm", "env_a") == []

    cluster.start_agent("env_a")
    back_at = time.monotonic()
    wait_for(lambda: reported(r, "rs_crm", "env_a").get("state") == contract.RUNNING
             and reported(r, "rs_crm", "env_a")["at"] > before, timeout=60, interval=0.2, what="rs_crm restarted on env_a")
    print(f"\noffline restart: carried out {time.monotonic() - back_at:.1f} s after env_a's agent started")
    restarted_at = reported(r, "rs_crm", "env_a")["at"]
    time.sleep(5)  # ten controller passes: a restart carried out again would show by now

    assert len(restart_jobs(r, "rs_crm", "env_a")) == 1
    assert reported(r, "rs_crm", "env_a")["at"] == restarted_at
    assert cluster.api("GET", "apps/rs_crm/").json()["statuses"]["env_a"]["state"] == "running"
