"""Changing an application's environments on a cluster of real processes (supervisor web, runsupervisor, env_a and
env_b with agent and web), over the documented API: PATCH /api/apps/<name>/."""

# The application is crm_envs, not crm: on PostgreSQL its database (app_<name>) is on a server that other test runs
# may be using at the same time.

import sqlite3

import pytest
import requests

from exchange import cache as config_cache
from exchange import contract
from workers import provisioning

from .local_cluster import Cluster
from .processes import postgres_env, wait_for
from .test_monitoring_processes import sample, scrape

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery"


@pytest.fixture
def cluster(tmp_path, redis_url, own_databases):
    c = Cluster(tmp_path, redis_url, worker_web=True)
    try:
        c.start()
        wait_for(lambda: {c.status_of("env_a"), c.status_of("env_b")} == {"online"}, what="registration")
        yield c
    finally:
        c.stop()


def crm_running_on_env_b(cluster):
    created = cluster.api("POST", "apps/", json={
        "name": "crm_envs", "display_name": "CRM", "environments": ["env_b"], "admin_username": "boss",
        "admin_password": PASSWORD})
    assert created.status_code == 201, created.text
    started = cluster.api("POST", "apps/crm_envs/start")
    assert started.status_code == 200, started.text


def on_worker(cluster, environment, path="/apps/crm_envs/admin/login/"):
    """Straight from ENVIRONMENT's worker web, not through the supervisor."""
    return requests.get(f"http://127.0.0.1:{cluster.worker_ports[environment]}{path}", timeout=10)


def database_kept_on(cluster, environment):
    if postgres_env("x"):
        return provisioning.database_exists("crm_envs")  # both environments use this test's one PostgreSQL server
    path = cluster.tmp / environment / "apps" / "crm_envs.sqlite3"
    if not path.exists():
        return False
    with sqlite3.connect(path) as db:
        return db.execute("SELECT is_superuser FROM auth_user WHERE username = 'boss'").fetchone() == (1,)


def test_environments_added_are_provisioned_and_started_and_removed_ones_removed_keeping_the_data(cluster, r):
    crm_running_on_env_b(cluster)
    assert on_worker(cluster, "env_a").status_code == 404  # not placed there

    added = cluster.api("PATCH", "apps/crm_envs/", json={"environments": ["env_b", "env_a"]})

    assert added.status_code == 200, added.text
    assert added.json()["environments"] == ["env_b", "env_a"]
    assert {env: s["state"] for env, s in added.json()["statuses"].items()} == {"env_a": "running",
                                                                                 "env_b": "running"}
    assert database_kept_on(cluster, "env_a")  # provisioned: migrated, with its admin account
    assert on_worker(cluster, "env_a").status_code == 200
    chosen = requests.get(f"{cluster.base}/apps/crm_envs/admin/login/?_env=env_a", timeout=10)
    assert chosen.status_code == 200 and "appsup_env" in chosen.cookies

    removed = cluster.api("PATCH", "apps/crm_envs/", json={"environments": ["env_b"]})

    assert removed.status_code == 200, removed.text
    assert removed.json()["environments"] == ["env_b"] and list(removed.json()["statuses"]) == ["env_b"]
    wait_for(lambda: on_worker(cluster, "env_a").status_code == 404, timeout=5, what="env_a no longer serving crm_envs")
    assert database_kept_on(cluster, "env_a")
    # The supervisor's proxy sends it to env_b, whatever environment was chosen before.
    assert requests.get(f"{cluster.base}/apps/crm_envs/admin/login/", cookies={"appsup_env": "env_a"},
                        timeout=10).status_code == 200
    assert on_worker(cluster, "env_b").status_code == 200


def test_a_change_waiting_for_an_offline_environment_is_completed_by_the_controller_once_it_is_back(cluster, r):
    crm_running_on_env_b(cluster)
    cluster.agents["env_a"].stop()  # SIGTERM: deregistered, offline at once
    wait_for(lambda: cluster.status_of("env_a") == "offline", what="env_a offline")

    added = cluster.api("PATCH", "apps/crm_envs/", json={"environments": ["env_b", "env_a"]})

    assert added.status_code == 202, added.text
    assert added.json()["pending"]["waiting_for"] == ["env_a"]
    assert "env_a" in added.json()["pending"]["message"]

    cluster.start_agent("env_a")
    wait_for(lambda: on_worker(cluster, "env_a").status_code == 200, timeout=60, interval=0.5,
             what="the controller's start of crm_envs on env_a")
    statuses = cluster.api("GET", "apps/crm_envs/").json()["statuses"]
    wait_for(lambda: cluster.api("GET", "apps/crm_envs/").json()["statuses"]["env_a"]["state"] == "running",
             what="crm_envs shown running on env_a")

    cluster.agents["env_a"].stop()
    wait_for(lambda: cluster.status_of("env_a") == "offline", what="env_a offline again")

    left = cluster.api("PATCH", "apps/crm_envs/", json={"environments": ["env_b"]})

    assert left.status_code == 202, left.text
    assert left.json()["pending"]["removed"] == ["env_a"] and left.json()["pending"]["waiting_for"] == ["env_a"]
    assert left.json()["environments"] == ["env_b"]
    # Not served there any more, even before the remove runs (its web is up, its agent away).
    wait_for(lambda: on_worker(cluster, "env_a").status_code == 404, timeout=5, what="env_a not serving crm_envs")
    assert config_cache.lookup(r, "crm_envs")[contract.LEAVING] == ["env_a"]

    cluster.start_agent("env_a")
    wait_for(lambda: config_cache.lookup(r, "crm_envs")[contract.LEAVING] == [], timeout=60, interval=0.5,
             what="the controller's remove of crm_envs on env_a")
    assert sample(scrape(cluster), "appsup_command_duration_seconds_count", command="remove", environment="env_a",
                  outcome="ok") == 1
    assert r.hget(contract.STATUSES_KEY, contract.status_field("crm_envs", "env_a")) is None
    assert database_kept_on(cluster, "env_a")
    assert on_worker(cluster, "env_a").status_code == 404
    assert statuses["env_b"]["state"] == "running"
