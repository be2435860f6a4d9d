"""The operations endpoints on a local cluster of real processes (tests.local_cluster), configured the documented
way: /readyz follows Redis and the database, /metrics shows the environments and the durations of commands run by
the API (in the web process) and by the controller (in runsupervisor), and the RQ dashboard lists every queue."""

import re

import pytest
import requests

from .conftest import free_port
from .local_cluster import TOKEN, Cluster
from .processes import base_env, http_ready, manage, wait_for, web_process

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery"


@pytest.fixture
def cluster(tmp_path, redis_server, own_databases):
    c = Cluster(tmp_path, redis_server.url, worker_web=True)  # without its web, an environment is degraded
    try:
        # The operator's login for the dashboard, made before the supervisor's processes write to its database.
        manage(["migrate", "-v0"], c.supervisor_env)
        manage(["ensureadmin", "--username", "ops", "--password", PASSWORD], c.supervisor_env)
        c.start()
        yield c
    finally:
        c.stop()


def scrape(cluster):
    response = requests.get(f"{cluster.base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert response.status_code == 200, response.text
    return response.text


def sample(text, name, **labels):
    """The value of NAME{LABELS} in a scrape, or None."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    found = re.search(rf"^{re.escape(name)}\{{{re.escape(wanted)}\}} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def admin_session(cluster):
    session = requests.Session()
    login = f"{cluster.base}/admin/login/"
    session.get(login, timeout=10)
    answer = session.post(login, data={"username": "ops", "password": PASSWORD, "next": "/admin/",
                                       "csrfmiddlewaretoken": session.cookies["csrftoken"]},
                          headers={"Referer": login}, timeout=10)
    assert answer.url.endswith("/admin/"), answer.text[:500]
    return session


def test_readiness_metrics_and_dashboard_of_a_running_cluster(cluster, redis_server):
    wait_for(lambda: {cluster.status_of("env_a"), cluster.status_of("env_b")} == {"online"}, what="registration")
    assert requests.get(f"{cluster.base}/readyz", timeout=10).status_code == 200
    for port in cluster.worker_ports.values():
        assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200

    # Anonymous scrapes are refused; the token sees both environments up.
    anonymous = requests.get(f"{cluster.base}/metrics", timeout=10)
    assert anonymous.status_code == 401 and "appsup_" not in anonymous.text
    text = scrape(cluster)
    assert 'appsup_environment_up{environment="env_a"} 1' in text
    assert sample(text, "appsup_environment_up", environment="env_b") == 1

    # crm on env_a then env_b, started through the API while env_b's agent is away: the web process runs the step
    # on env_a and finds env_b offline; once env_b is back, the controller (runsupervisor) starts crm there.
    created = cluster.api("POST", "apps/", json={
        "name": "crm", "display_name": "CRM", "environments": ["env_a", "env_b"], "admin_username": "boss",
        "admin_password": PASSWORD})
    assert created.status_code == 201, created.text
    cluster.agents["env_b"].stop()
    wait_for(lambda: cluster.status_of("env_b") == "offline", what="env_b offline")
    started = cluster.api("POST", "apps/crm/start")
    assert started.status_code == 202 and started.json()["environment"] == "env_b", started.text
    cluster.start_agent("env_b")

    def started_by_the_controller():
        return sample(scrape(cluster), "appsup_command_duration_seconds_count", command="start",
                      environment="env_b", outcome="ok")

    wait_for(started_by_the_controller, timeout=60, interval=0.5, what="the controller's start of crm on env_b")
    text = scrape(cluster)
    assert sample(text, "appsup_command_duration_seconds_count", command="start", environment="env_a",
                  outcome="ok") == 1
    assert sample(text, "appsup_command_duration_seconds_count", command="start", environment="env_b",
                  outcome="offline") == 1
    assert sample(text, "appsup_command_duration_seconds_sum", command="start", environment="env_b",
                  outcome="ok") > 0
    assert sample(text, "appsup_placements", state="running") == 2

    # A request through the proxy is counted under its application.
    assert requests.get(f"{cluster.base}/apps/crm/admin/login/?_env=env_a", timeout=10).status_code == 200
    assert sample(scrape(cluster), "appsup_proxy_requests_total", app="crm", code="2xx") >= 1

    # The RQ dashboard, from the admin, lists both environments' queues.
    session = admin_session(cluster)
    dashboard = session.get(f"{cluster.base}/admin/django_rq/dashboard/", timeout=10)
    assert dashboard.status_code == 200
    assert "appsup.env_a" in dashboard.text and "appsup.env_b" in dashboard.text

    # Redis killed: /readyz says so at once, /metrics (the database) still answers; back when Redis is.
    redis_server.kill()
    down = requests.get(f"{cluster.base}/readyz", timeout=10)
    assert down.status_code == 503 and down.json()["down"] == ["redis"], down.text
    assert sample(scrape(cluster), "appsup_environment_up", environment="env_a") is not None
    redis_server.start()
    wait_for(lambda: requests.get(f"{cluster.base}/readyz", timeout=10).status_code == 200, what="ready again")


def test_a_supervisor_whose_database_does_not_answer_is_not_ready_naming_it(tmp_path, redis_url):
    port = free_port()
    env = base_env(tmp_path / "supervisor", redis_url, APP_MODE="supervisor", DB_DIALECT="postgres",
                   DB_HOST="127.0.0.1", DB_PORT=free_port(), DB_USER="postgres", DB_DATABASE="appsup_nowhere")
    web = web_process(env, port, tmp_path / "supervisor.log")
    try:
        wait_for(http_ready(f"http://127.0.0.1:{port}/healthz"), what="the supervisor web")
        response = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert response.status_code == 503
        assert response.json()["down"] == ["database"]
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200  # alive, not ready
    finally:
        web.stop()
    assert "database does not answer" in (tmp_path / "supervisor.log").read_text()
