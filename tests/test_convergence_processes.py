"""Convergence after faults, with real processes: a supervisor web, its controller (runsupervisor) and worker agents
on the real test Redis. Nobody calls the API to repair anything: the controller does."""

import signal
import threading
import time

import pytest
import redis
import requests

from exchange import contract, registry, status
from exchange.channel import queue_for
from exchange.locks import SignedLock

from .local_cluster import Cluster
from .processes import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def cluster(tmp_path, redis_url, own_databases):
    c = Cluster(tmp_path, redis_url)
    # Long enough that an agent killed outright still counts as online while the test acts.
    c.supervisor_env["APP_HEARTBEAT_TIMEOUT"] = "10"
    try:
        c.start()
        wait_for(lambda: {c.status_of("env_a"), c.status_of("env_b")} <= {"online", "degraded"}
                 and c.status_of("env_a") is not None and c.status_of("env_b") is not None,
                 what="both environments registered")
        yield c
    finally:
        c.stop()


def create(cluster, name, environments):
    created = cluster.api("POST", "apps/", json={
        "name": name, "display_name": name.upper(), "environments": environments,
        "admin_username": "boss", "admin_password": "correct-horse-battery"})
    assert created.status_code == 201, created.text


def reported(r, app, env):
    entry = status.decode(r.hget(contract.STATUSES_KEY, contract.status_field(app, env)), app, env)
    return None if entry is None else entry["state"]


def running_everywhere(r, app, envs):
    return all(reported(r, app, env) == contract.RUNNING for env in envs)


def test_a_start_cut_off_by_a_supervisor_crash_is_finished_by_the_controller(cluster, redis_url):
    r = redis.Redis.from_url(redis_url)
    create(cluster, "crm", ["env_a", "env_b"])
    cluster.agents["env_b"].signal(signal.SIGKILL)  # env_b's job will wait in its queue, still "online"
    cluster.agents["env_b"].wait(10)

    answer = {}
    caller = threading.Thread(
        target=lambda: answer.setdefault("response", _quietly(cluster.api, "POST", "apps/crm/start?timeout=4")))
    caller.start()
    wait_for(lambda: queue_for("env_b", r).count > 0, timeout=30, what="env_b's start enqueued")
    assert reported(r, "crm", "env_a") == contract.RUNNING
    cluster.supervisor.signal(signal.SIGKILL)  # the supervisor dies in the middle of the sequential start
    crashed_at = time.monotonic()
    caller.join(10)
    assert r.exists(contract.lock_key("crm"))  # its lock is left behind, until it expires

    time.sleep(4.5)  # the queued job outlives what its sender waited for: it must never run now
    cluster.start_agent("env_b")

    wait_for(lambda: running_everywhere(r, "crm", ["env_a", "env_b"]), timeout=60, interval=0.2,
             what="crm running on both environments")
    converged = time.monotonic() - crashed_at
    assert converged < 60
    print(f"\nstart cut off by a supervisor crash: running on both {converged:.1f} s after the crash")


def _quietly(call, *args):
    try:
        return call(*args)
    except Exception as exc:  # the supervisor is killed under the call
        return exc


def test_a_start_pending_on_an_offline_environment_completes_when_it_returns(cluster, redis_url):
    r = redis.Redis.from_url(redis_url)
    create(cluster, "crm", ["env_a", "env_b"])
    cluster.agents["env_b"].signal(signal.SIGTERM)  # a graceful stop: offline at once
    assert cluster.agents["env_b"].wait(15) == 0
    wait_for(lambda: cluster.status_of("env_b") == "offline", timeout=5, what="env_b offline")

    refused = cluster.api("POST", "apps/crm/start?timeout=30")
    assert refused.status_code == 202, refused.text
    assert refused.json()["pending"]["waiting_for"] == ["env_b"]
    assert refused.json()["pending"]["done"] == ["env_a"]
    assert cluster.api("GET", "apps/crm/").json()["desired_state"] == "running"

    cluster.start_agent("env_b")
    back_at = time.monotonic()
    wait_for(lambda: reported(r, "crm", "env_b") == contract.RUNNING, timeout=30, interval=0.2,
             what="crm running on env_b")
    print(f"\nstart pending on an offline environment: running {time.monotonic() - back_at:.1f} s after its return")


def test_a_stop_is_kept_while_an_environment_is_offline_and_completed_when_it_returns(cluster, redis_url):
    r = redis.Redis.from_url(redis_url)
    create(cluster, "crm", ["env_a", "env_b"])
    assert cluster.api("POST", "apps/crm/start").status_code == 200
    cluster.agents["env_b"].signal(signal.SIGTERM)
    assert cluster.agents["env_b"].wait(15) == 0
    wait_for(lambda: cluster.status_of("env_b") == "offline", timeout=5, what="env_b offline")

    refused = cluster.api("POST", "apps/crm/stop")
    assert refused.status_code == 202
    assert refused.json()["pending"] == {
        "desired_state": "stopped", "done": ["env_a"], "waiting_for": ["env_b"],
        "message": "crm stays desired stopped: the controller completes the stop on env_b once it is back online"}

    cluster.start_agent("env_b")
    wait_for(lambda: reported(r, "crm", "env_b") == contract.STOPPED, timeout=30, interval=0.2,
             what="crm stopped on env_b")
    assert reported(r, "crm", "env_a") == contract.STOPPED


def test_an_agent_killed_mid_start_blocks_nothing_and_the_start_completes_by_itself(cluster, redis_url):
    r = redis.Redis.from_url(redis_url)
    create(cluster, "crm", ["env_a"])
    create(cluster, "erp", ["env_a"])
    # Another holder of crm's database lock, which dies without releasing it: the lock outlives it by its TTL.
    SignedLock(r, contract.provision_lock_key("crm"), contract.PROVISION_LOCK, timeout=15).acquire()

    answer = {}
    caller = threading.Thread(
        target=lambda: answer.setdefault("response", _quietly(cluster.api, "POST", "apps/crm/start")))
    caller.start()
    wait_for(lambda: reported(r, "crm", "env_a") == contract.STARTING, timeout=30, what="crm starting")
    cluster.agents["env_a"].signal(signal.SIGKILL)  # mid-start: the job is taken, the state says starting
    cluster.agents["env_a"].wait(10)
    killed_at = time.monotonic()
    cluster.start_agent("env_a")

    caller.join(30)
    assert not caller.is_alive(), "the supervisor waited on a command nobody runs"
    failed = answer["response"]
    assert failed.status_code == 409 and "interrupted" in failed.json()["error"], failed.text

    other = cluster.api("POST", "apps/erp/start?timeout=30")
    assert other.status_code == 200, other.text
    assert time.monotonic() - killed_at < 30

    wait_for(lambda: reported(r, "crm", "env_a") == contract.RUNNING, timeout=30, interval=0.2,
             what="the interrupted start completed by the controller")
    print("\nagent killed mid-start: crm running "
          f"{time.monotonic() - killed_at:.1f} s after the kill")


def test_a_killed_worker_web_makes_its_environment_degraded_and_the_proxy_avoids_it(tmp_path, redis_url,
                                                                                       own_databases):  # noqa: F811
    c = Cluster(tmp_path, redis_url, worker_web=True)
    try:
        c.start()
        wait_for(lambda: c.status_of("env_a") == "online", what="env_a online")
        create(c, "crm", ["env_a"])
        assert c.api("POST", "apps/crm/start").status_code == 200
        url = f"{c.base}/apps/crm/admin/login/"
        assert requests.get(url, timeout=10).status_code == 200
        # Once the agent has seen its web answer: until then a silent web is "starting" (workers.agent.STARTUP_GRACE).
        redis_client = redis.Redis.from_url(redis_url)
        wait_for(lambda: registry.read(redis_client).get("env_a", {}).get("web_ok") is True,
                 what="env_a's agent to see its web answer")

        c.webs["env_a"].signal(signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for(lambda: c.status_of("env_a") == "degraded", timeout=int(c.supervisor_env["APP_HEARTBEAT_TIMEOUT"]),
                 what="env_a degraded within the heartbeat timeout")
        degraded_after = time.monotonic() - killed_at
        env_a = c.environments()["env_a"]
        assert "does not answer /healthz" in (env_a.get("problem") or ""), env_a

        refused = requests.get(url, timeout=10, headers={"Accept": "application/json"})
        assert refused.status_code == 503 and "degraded" in refused.text
        print(f"\nworker web killed: env_a degraded after {degraded_after:.1f} s")
    finally:
        c.stop()


def test_a_lease_planted_after_a_flush_does_not_stop_the_controller_from_rebuilding_the_cache(cluster, redis_url):
    r = redis.Redis.from_url(redis_url)
    create(cluster, "crm", ["env_a"])
    r.flushall()
    planted_until = time.monotonic() + 3
    while time.monotonic() < planted_until:  # planted, and renewed, by someone without the supervisor's key
        r.set(contract.CONTROLLER_LEASE_KEY, "attacker", ex=3600)
        time.sleep(0.2)

    wait_for(lambda: r.exists(contract.CACHE_READY_KEY) and r.hexists(contract.APPS_KEY, "crm"), timeout=10,
             what="the configuration cache rebuilt")
    # Between the planted value's removal and the controller's own, nobody holds it: None for a moment.
    wait_for(lambda: (r.get(contract.CONTROLLER_LEASE_KEY) or b"").startswith(b"appsup2:supervisor:"), timeout=5,
             what="the lease held by the controller again")
    assert int(r.hget(contract.FORGED_LOCKS_KEY, contract.LEASE_LOCK)) >= 1
