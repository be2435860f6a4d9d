"""A worker web whose every thread is held by slow hosted views still answers /healthz at once (from the event
loop), so its agent never calls the environment degraded for being busy, and the proxy does not refuse the
environment's other applications. Real processes: supervisor web and controller, a worker web and agent."""

import threading
import time

import pytest
import requests

from .local_cluster import Cluster
from .processes import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery"
BUSY = {"APP_HOSTED_APPS": "samples.notes", "APP_HOSTED_URLCONF": "tests.operator_urls", "APP_WEB_THREADS": "2"}


@pytest.fixture
def cluster(tmp_path, redis_url, own_databases):
    c = Cluster(tmp_path, redis_url, worker_web=True, worker_overrides={"env_a": BUSY})
    try:
        c.start()
        wait_for(lambda: c.status_of("env_a") == "online", what="env_a online")
        created = c.api("POST", "apps/", json={"name": "crm", "environments": ["env_a"], "admin_username": "boss",
                                               "admin_password": PASSWORD})
        assert created.status_code == 201, created.text
        assert c.api("POST", "apps/crm/start").status_code == 200
        yield c
    finally:
        c.stop()


def test_a_worker_whose_threads_are_all_busy_is_alive_and_not_degraded(cluster):
    worker = f"http://127.0.0.1:{cluster.worker_ports['env_a']}"
    slow = f"{worker}/apps/crm/slow/?s=3"
    stop = threading.Event()

    def keep_busy():
        while not stop.is_set():
            try:
                requests.get(slow, timeout=60)
            except requests.RequestException:
                pass

    clients = [threading.Thread(target=keep_busy, daemon=True) for _ in range(8)]
    for client in clients:
        client.start()
    probes, statuses = [], set()
    try:
        time.sleep(1)  # both threads taken, six requests waiting behind them
        end = time.monotonic() + 12  # longer than the agent's probe period and its 2 s timeout
        while time.monotonic() < end:
            began = time.monotonic()
            assert requests.get(f"{worker}/healthz", timeout=10).status_code == 200
            probes.append(time.monotonic() - began)
            statuses.add(cluster.status_of("env_a"))
            time.sleep(0.5)
    finally:
        stop.set()
        for client in clients:
            client.join(15)
    print(f"\n/healthz with every thread busy: slowest {max(probes):.3f} s of {len(probes)}; env_a {statuses}")
    assert max(probes) < 0.5
    assert statuses == {"online"}
