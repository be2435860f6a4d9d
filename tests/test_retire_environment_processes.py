"""Retiring an environment whose processes are gone for good, and refusing one that never verified, with real
processes: a supervisor web, its controller, and two workers (agent and web) on the real test Redis."""

import json
import signal
import time

import pytest
import redis
import requests

from exchange.contract import ENVIRONMENTS_KEY

from .local_cluster import Cluster
from .processes import own_postgres_databases, wait_for

# Its own PostgreSQL databases, and application names (so hosted databases app_<name>) no other test file uses:
# other test files may run at the same time on the same server.
DATABASES = ["appsup_retire_sup", "appsup_retire_env_a", "appsup_retire_env_b"]

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def cluster(tmp_path, redis_url):
    with own_postgres_databases(DATABASES):
        yield from _cluster(tmp_path, redis_url)


def _cluster(tmp_path, redis_url):
    c = Cluster(tmp_path, redis_url, databases=DATABASES, worker_web=True)
    try:
        c.start()
        wait_for(lambda: c.status_of("env_a") == "online" and c.status_of("env_b") == "online", timeout=60,
                 what="both environments online")
        yield c
    finally:
        c.stop()


def create_and_start(cluster, name, environments):
    created = cluster.api("POST", "apps/", json={
        "name": name, "environments": environments, "admin_username": "boss",
        "admin_password": "correct-horse-battery"})
    assert created.status_code == 201, created.text
    started = cluster.api("POST", f"apps/{name}/start")
    assert started.status_code == 200, started.text


def through_proxy(cluster, app):
    return requests.get(f"{cluster.base}/apps/{app}/admin/login/", timeout=10, allow_redirects=False).status_code


def test_a_dead_environment_is_forgotten_and_its_applications_keep_serving_elsewhere(cluster):
    create_and_start(cluster, "rt_crm", ["env_a", "env_b"])
    create_and_start(cluster, "rt_erp", ["env_b"])
    for process in (cluster.agents["env_b"], cluster.webs["env_b"]):  # gone for good
        process.signal(signal.SIGKILL)
        process.wait(10)
    wait_for(lambda: cluster.status_of("env_b") == "offline", timeout=15, what="env_b offline")

    kept = cluster.api("DELETE", "apps/rt_erp")
    assert kept.status_code == 409 and "force=true" in kept.json()["error"], kept.text
    assert cluster.api("DELETE", "apps/rt_erp?force=true").status_code == 204
    wait_for(lambda: through_proxy(cluster, "rt_erp") == 404, timeout=5, what="rt_erp unknown to the proxy")

    refused = cluster.api("DELETE", "environments/env_b")
    assert refused.status_code == 409 and refused.json()["applications"] == ["rt_crm"], refused.text

    forgotten = cluster.api("DELETE", "environments/env_b?force=true")

    assert forgotten.status_code == 204, forgotten.text
    assert "env_b" not in cluster.environments()
    assert cluster.api("GET", "apps/rt_crm/").json()["environments"] == ["env_a"]
    wait_for(lambda: through_proxy(cluster, "rt_crm") == 200, timeout=5, what="rt_crm served from env_a")
    time.sleep(2)  # a few controller passes: nothing brings env_b back
    assert "env_b" not in cluster.environments()
    assert through_proxy(cluster, "rt_crm") == 200


def test_an_environment_written_to_redis_without_the_secret_takes_no_placement(cluster, redis_url):
    plain = redis.Redis.from_url(redis_url)
    plain.hset(ENVIRONMENTS_KEY, "env_x", json.dumps({
        "name": "env_x", "url": "http://evil.test:8000", "proxy_url": "", "version": "1", "host": "evil", "pid": 1,
        "heartbeat_at": time.time()}))
    time.sleep(1.5)  # the controller's mirror sees it (and counts it as rejected)

    response = cluster.api("POST", "apps/", json={
        "name": "rt_crm", "environments": ["env_x"], "admin_username": "boss",
        "admin_password": "correct-horse-battery"})

    assert response.status_code == 400, response.text
    assert response.json()["errors"]["environments"][0].startswith("Environment env_x takes no placements")
