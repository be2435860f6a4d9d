"""The control plane end to end, as an operator runs it: a supervisor web process and two worker agents, talking
through a real Redis, driven over real HTTP and the documented commands."""

import signal
import time

import pytest
import requests

from workers import provisioning

from .local_cluster import TIMEOUT, Cluster
from .processes import (
    manage,
    postgres_env,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


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
    # …and a start answers at once that it waits for it (202, naming it): the controller completes it once back.
    began = time.monotonic()
    waiting = cluster.api("POST", "apps/crm/start")
    assert waiting.status_code == 202, waiting.text
    assert waiting.json()["environment"] == "env_b"
    assert "offline" in waiting.json()["message"]
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
