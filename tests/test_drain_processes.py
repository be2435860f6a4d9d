"""Draining an environment end to end (environments.drain, run by ``runsupervisor``): real processes, real Redis,
real HTTP; each environment has storage of its own, so the applications' data travels with them."""

import pytest

from .local_cluster import Cluster
from .processes import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery"
APPS = ("dr-hr", "dr-wiki")  # names of their own: on PostgreSQL the server is shared with other runs


@pytest.fixture
def cluster(tmp_path, redis_url, own_databases):
    c = Cluster(tmp_path, redis_url, worker_web=True)
    try:
        c.start()
        wait_for(lambda: {c.status_of("env_a"), c.status_of("env_b")} == {"online"}, what="registration")
        for name in APPS:
            created = c.api("POST", "apps/", json={"name": name, "environments": ["env_b"], "admin_username": "boss",
                                                   "admin_password": PASSWORD})
            assert created.status_code == 201, created.text
            assert c.api("POST", f"apps/{name}/start").status_code == 200
        yield c
    finally:
        c.stop()


def create(cluster, name, environments):
    return cluster.api("POST", "apps/", json={"name": name, "environments": environments, "admin_username": "boss",
                                              "admin_password": PASSWORD})


def test_draining_env_b_moves_its_apps_to_env_a_running_and_it_takes_no_new_one(cluster):
    asked = cluster.api("POST", "environments/env_b/drain")
    assert asked.status_code == 202, asked.text
    assert asked.json()["status"] in ("draining", "drained")

    refused = create(cluster, "dr-new", ["env_b"])
    assert refused.status_code == 400
    assert "env_b" in refused.json()["errors"]["environments"][0]

    wait_for(lambda: cluster.status_of("env_b") == "drained", timeout=90, what="env_b drained")
    env_b = cluster.environments()["env_b"]
    assert env_b["drain_left"] == {} and env_b["liveness"] == "online"
    for name in APPS:
        app = cluster.api("GET", f"apps/{name}/").json()
        assert app["environments"] == ["env_a"], app
        assert app["statuses"]["env_a"]["state"] == "running"
        assert cluster.api("GET", f"apps/{name}/").status_code == 200
    assert create(cluster, "dr-new", ["env_b"]).status_code == 400

    back = cluster.api("POST", "environments/env_b/undrain")
    assert back.status_code == 200 and back.json()["status"] == "online"
    assert create(cluster, "dr-new", ["env_b"]).status_code == 201


def test_an_app_no_environment_can_take_is_stopped_with_the_reason(cluster):
    cluster.agents["env_a"].stop()
    wait_for(lambda: cluster.status_of("env_a") == "offline", what="env_a offline")
    assert cluster.api("POST", "environments/env_b/drain").status_code == 202
    wait_for(lambda: cluster.status_of("env_b") == "drained", timeout=90, what="env_b drained")
    left = cluster.environments()["env_b"]["drain_left"]
    assert set(left) == set(APPS)
    assert all("no online environment" in reason and "stopped" in reason for reason in left.values()), left
    for name in APPS:
        app = cluster.api("GET", f"apps/{name}/").json()
        assert app["desired_state"] == "stopped" and app["statuses"]["env_b"]["state"] == "stopped"
    assert cluster.api("POST", "environments/nowhere/drain").status_code == 404
