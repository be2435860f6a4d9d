"""The reference deployment's addresses: its compose file names the workers' services worker_a and worker_b, and sets
ENVIRONMENT_URL and ENVIRONMENT_PROXY_URL to them. Django refuses a Host with an underscore, so nothing may send one
where Django reads it: env_a, addressed as worker_a, must come online (its agent probes its web there), and its
applications must be served through the supervisor. Real processes: supervisor web and controller, env_a's web and
agent; worker_a must resolve to 127.0.0.1 (.ci/run adds it to /etc/hosts)."""

import socket

import pytest
import requests

from .local_cluster import Cluster
from .processes import wait_for

SAMPLE = {"APP_HOSTED_APPS": "samples.notes", "APP_HOSTED_URLCONF": "samples.notes.urls"}


def resolves_here(name):
    try:
        return socket.gethostbyname(name) == "127.0.0.1"
    except OSError:
        return False


pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not resolves_here("worker_a"), reason="worker_a does not resolve to 127.0.0.1 here "
                       "(as root: echo '127.0.0.1 worker_a' >> /etc/hosts; .ci/run does)"),
]


def test_a_worker_addressed_by_a_name_with_an_underscore_comes_online_and_serves(tmp_path, redis_url, own_databases):
    cluster = Cluster(tmp_path, redis_url, worker_web=True, worker_overrides={"env_a": SAMPLE})
    address = f"http://worker_a:{cluster.worker_ports['env_a']}"
    cluster.worker_envs["env_a"].update(ENVIRONMENT_URL=address, ENVIRONMENT_PROXY_URL=address)
    try:
        cluster.start()
        wait_for(lambda: cluster.status_of("env_a") == "online", timeout=30, what="env_a online at worker_a")
        created = cluster.api("POST", "apps/", json={"name": "crm", "environments": ["env_a"],
                                                     "admin_username": "boss", "admin_password": "correct-horse-9"})
        assert created.status_code == 201, created.text
        started = cluster.api("POST", "apps/crm/start")
        assert started.status_code == 200, started.text

        page = requests.get(f"{cluster.base}/apps/crm/admin/login/", timeout=30)
        assert page.status_code == 200 and "boss" not in page.text and 'name="username"' in page.text
        # And it stays so: the next heartbeat, after its agent probed the web at worker_a, keeps it online.
        seen = cluster.environments()["env_a"]["last_heartbeat_at"]
        wait_for(lambda: cluster.environments()["env_a"]["last_heartbeat_at"] != seen, what="another heartbeat")
        environment = cluster.environments()["env_a"]
        assert (environment["status"], environment["problem"]) == ("online", None), environment
        assert environment["url"] == environment["proxy_url"] == address
    finally:
        cluster.stop()
