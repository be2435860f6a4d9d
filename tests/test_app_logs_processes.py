"""An application's requests through the supervisor, seen from the supervisor: after 10 requests /metrics counts
them, and its last requests and a failing view's traceback are on its admin Logs page and from
GET /api/apps/<name>/logs; an entry forged with a plain Redis client is skipped; the Environments page shows the
CPU and memory of the worker's web and agent. Real processes: supervisor web and
controller, a worker web and agent."""

import re

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from exchange import contract

from .local_cluster import TOKEN, Cluster
from .processes import manage, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

APP = "logsapp"
PASSWORD = "correct-horse-battery"
HOSTED = {"APP_HOSTED_APPS": "samples.notes", "APP_HOSTED_URLCONF": "tests.operator_urls"}


@pytest.fixture
def cluster(tmp_path, redis_url, own_databases):
    c = Cluster(tmp_path, redis_url, worker_web=True, worker_overrides={"env_a": HOSTED})
    try:
        c.start()
        wait_for(lambda: c.status_of("env_a") == "online", what="env_a online")
        created = c.api("POST", "apps/", json={"name": APP, "environments": ["env_a"], "admin_username": "boss",
                                               "admin_password": PASSWORD})
        assert created.status_code == 201, created.text
        assert c.api("POST", f"apps/{APP}/start").status_code == 200
        yield c
    finally:
        c.stop()


def requests_counted(cluster):
    text = requests.get(f"{cluster.base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).text
    return {s.labels["code"]: s.value for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == "appsup_app_requests_total" and s.labels["app"] == APP and s.labels["environment"] == "env_a"}


def test_requests_through_the_supervisor_show_in_metrics_logs_and_the_admin(cluster, redis_url):
    for i in range(10):
        page = requests.get(f"{cluster.base}/apps/{APP}/admin/login/?page={i}", timeout=30, allow_redirects=False)
        assert page.status_code == 200
    assert requests.get(f"{cluster.base}/apps/{APP}/broken/", timeout=30).status_code == 500

    wait_for(lambda: requests_counted(cluster).get("2xx") == 10 and requests_counted(cluster).get("5xx") == 1,
             what="the requests counted on /metrics", timeout=10)

    # planted by whoever can write to Redis, without the secret
    redis.Redis.from_url(redis_url).lpush(contract.app_log_key(APP), b'{"method":"GET","path":"/forged/"}')

    logs = cluster.api("GET", f"apps/{APP}/logs").json()
    assert [e["path"] for e in logs["entries"]][:2] == ["/broken/", "/admin/login/"]
    assert [e["status"] for e in logs["entries"]].count(200) == 10
    assert "/forged/" not in str(logs) and logs["skipped"] == 1
    errors = cluster.api("GET", f"apps/{APP}/logs", params={"errors": "true"}).json()["entries"]
    assert errors[0]["error"]["type"] == "ZeroDivisionError"
    assert "the operator's bug" in errors[0]["error"]["traceback"]
    assert "tests/operator_urls.py" in errors[0]["error"]["traceback"]

    session = requests.Session()
    login = f"{cluster.base}/admin/login/"
    manage(["createsuperuser", "--noinput", "--username", "root", "--email", "root@example.com"],
           {**cluster.supervisor_env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD})
    form = session.get(login, timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    session.post(login, data={"username": "root", "password": PASSWORD, "csrfmiddlewaretoken": token,
                              "next": "/admin/"}, headers={"Referer": login}, timeout=30)
    listing = session.get(f"{cluster.base}/admin/apps/application/", timeout=30).text
    change = re.search(rf'href="(/admin/apps/application/(\d+)/change/)"[^>]*>{APP}<', listing)
    page = session.get(f"{cluster.base}/admin/apps/application/{change.group(2)}/logs/",
                       params={"errors": "true"}, timeout=30)
    assert page.status_code == 200
    assert "ZeroDivisionError" in page.text and "the operator&#x27;s bug" in page.text
    # the same cluster's environments: CPU and memory of env_a's web and agent, as its heartbeats report them
    wait_for(lambda: re.search(r"web: [0-9.]+ % CPU · [0-9]+ MB</span><br><span class=\"appsup-usage\">agent: [0-9.]+ % CPU",
                               session.get(f"{cluster.base}/admin/environments/environment/", timeout=30).text),
             what="env_a's usage on the Environments page", timeout=15)
