"""deploy/prometheus/scrape.yml and deploy/grafana/appsup-dashboard.json, checked without Prometheus or Grafana: the
scrape job reaches bin/cluster's supervisor with the token from a file, and every metric the dashboard queries is one
the supervisor's /metrics exposes."""

import json
import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from apps import lifecycle
from cluster import launcher as cluster
from monitoring import metrics
from supervisor_project.config import BASE_DIR

from .factories import create_application, mirror, register_environment

SCRAPE = BASE_DIR / "deploy" / "prometheus" / "scrape.yml"
DASHBOARD = BASE_DIR / "deploy" / "grafana" / "appsup-dashboard.json"
METRIC = re.compile(r"\bappsup_[a-z0-9_]+\b")
TOKEN = "deploy-token-0123456789abcdef012"


def scrape_job():
    config = yaml.safe_load(SCRAPE.read_text())
    (job,) = config["scrape_configs"]
    return job


def test_the_scrape_job_reads_bin_clusters_supervisor_with_the_token_from_a_file():
    job = scrape_job()
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer"
    assert "credentials" not in job["authorization"]  # never the token itself
    token_file = (SCRAPE.parent / job["authorization"]["credentials_file"]).resolve()
    assert token_file == (BASE_DIR / "storage" / "api-token.txt").resolve()
    (target,) = job["static_configs"][0]["targets"]
    assert target == f"127.0.0.1:{cluster.DEFAULT_BASE_PORT}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Prometheus) is not installed")
def test_promtool_accepts_the_scrape_config(tmp_path):
    job = scrape_job()
    config_dir = tmp_path / "deploy" / "prometheus"
    config_dir.mkdir(parents=True)
    shutil.copy(SCRAPE, config_dir / "scrape.yml")
    token_file = config_dir / job["authorization"]["credentials_file"]
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.write_text("token\n")
    checked = subprocess.run(["promtool", "check", "config", str(config_dir / "scrape.yml")], capture_output=True,
                             text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def dashboard_queries(dashboard):
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            yield variable["name"], variable["definition"]


def test_the_dashboard_is_grafana_json_over_a_prometheus_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] == "App Supervisor"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"datasource"}


@pytest.mark.django_db
def test_every_metric_the_dashboard_queries_is_exposed_by_metrics(client, settings, r):
    from apps import cache
    from apps.models import Application

    settings.SUPERVISOR_API_TOKEN = TOKEN
    register_environment("env_a")
    app = create_application("crm", ["env_a"])
    cache.publish(r, Application.objects.with_placements().get(pk=app.pk))
    mirror()
    metrics.observe_step("start", lifecycle.Step("env_a", True, "running", seconds=1.5))
    metrics.PROXY_REQUESTS.labels("crm", "2xx").inc(0)  # a series, as the first proxied request makes
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    exposed = {sample.name for family in text_string_to_metric_families(response.content.decode())
               for sample in family.samples}

    queried = {(where, name) for where, expr in dashboard_queries(json.loads(DASHBOARD.read_text()))
               for name in METRIC.findall(expr)}

    assert queried
    assert {(where, name) for where, name in queried if name not in exposed} == set()
