"""Each application's load on the worker web processes (exchange.load), as the supervisor shows it: /metrics and the
Applications admin change page. What the workers wrote is read from a real Redis; forged, stale or garbled reports
are planted there with a plain client and must count for nothing."""

import json
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from apps.models import Application
from exchange import cache as config_cache
from exchange import contract, signing
from exchange import load as load_report

from .factories import create_application, register_environment

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-for-tests-01234567"


def busy(in_flight=0, queued=0, refused=0):
    return {"in_flight": in_flight, "queued": queued, "refused": refused}


def scrape(client, settings):
    settings.SUPERVISOR_API_TOKEN = TOKEN
    text = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).content.decode()
    return {(s.name, s.labels.get("app")): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name.startswith("appsup_app_requests")}


@pytest.fixture
def two_apps():
    register_environment("env_a")
    register_environment("env_b")
    create_application("crm", ["env_a", "env_b"])
    create_application("wiki", ["env_a"])


def test_metrics_sum_each_application_over_processes_and_environments(client, settings, r, two_apps):
    load_report.write(r, "env_a", "host-1:11", {"crm": busy(2, 3, 40), "wiki": busy(1)})
    load_report.write(r, "env_a", "host-1:12", {"crm": busy(1, 0, 2)})
    load_report.write(r, "env_b", "host-2:11", {"crm": busy(2, 1, 0)})

    found = scrape(client, settings)

    assert found[("appsup_app_requests_in_flight", "crm")] == 5
    assert found[("appsup_app_requests_queued", "crm")] == 4
    assert found[("appsup_app_requests_refused_total", "crm")] == 42
    assert found[("appsup_app_requests_in_flight", "wiki")] == 1


def test_forged_stale_and_unknown_reports_count_for_nothing(client, settings, r, two_apps):
    load_report.write(r, "env_a", "host-1:11", {"crm": busy(1)})
    load_report.write(r, "env_a", "host-1:12", {"crm": busy(9, 9, 9)}, now=time.time() - load_report.STALE - 5)
    r.hset(contract.load_key("env_a"), "forger:1", json.dumps({"at": time.time(), "apps": {"crm": busy(50)}}))
    r.hset(contract.load_key("env_a"), "garbled:1", signing.seal(b"{not json", signer="env_a"))
    load_report.write(r, "env_a", "host-1:13", {"nobody": busy(7, 7, 7), "wiki": busy(in_flight="lots")})

    found = scrape(client, settings)

    assert found[("appsup_app_requests_in_flight", "crm")] == 1
    assert found[("appsup_app_requests_in_flight", "wiki")] == 0
    assert not any(app == "nobody" for _, app in found)  # only applications that exist: bounded cardinality


def test_reports_expire_with_their_key(r):
    load_report.write(r, "env_a", "host-1:11", {"crm": busy(1)})
    assert 0 < r.ttl(contract.load_key("env_a")) <= load_report.KEY_TTL


def test_a_scrape_writes_nothing_to_redis(client, settings, r, two_apps):
    load_report.write(r, "env_a", "host-1:11", {"crm": busy(1)})
    before = {key: r.dump(key) for key in r.keys("*")}
    scrape(client, settings)
    assert {key: r.dump(key) for key in r.keys("*")} == before


def test_the_change_page_shows_the_load_on_each_environment(admin_client, r, two_apps):
    load_report.write(r, "env_a", "host-1:11", {"crm": busy(2, 1, 17)})

    html = admin_client.get(f"/admin/apps/application/{Application.objects.get(name='crm').pk}/change/")

    page = html.content.decode()
    table = page[page.index('class="appsup-load"'):]
    assert "<tr><td>env_a</td><td>2</td><td>1</td><td>17</td></tr>" in table
    assert "<tr><td>env_b</td><td>0</td><td>0</td><td>0</td></tr>" in table


def test_the_change_page_says_when_redis_cannot_tell_the_load(admin_client, settings, two_apps):
    from exchange import redis_client

    settings.APP_SUPERVISOR_REDIS_URL = "redis://127.0.0.1:1/0"
    redis_client.reset()
    try:
        page = admin_client.get(f"/admin/apps/application/{Application.objects.get(name='crm').pk}/change/")
    finally:
        redis_client.reset()
    assert page.status_code == 200
    assert "unknown: Redis is unavailable" in page.content.decode()


def test_the_share_set_in_the_admin_reaches_the_workers_cache(admin_client, r, two_apps,
                                                                django_capture_on_commit_callbacks):
    crm = Application.objects.get(name="crm")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"/admin/apps/application/{crm.pk}/change/",
                                     {"display_name": "CRM", "concurrency": "3", "request_timeout": "0"})
    assert response.status_code == 302
    entry = config_cache.lookup(r, "crm")
    assert (entry["concurrency"], entry["request_timeout"]) == (3, 0)

    refused = admin_client.post(f"/admin/apps/application/{crm.pk}/change/",
                                {"display_name": "CRM", "concurrency": "0", "request_timeout": "-1"})
    assert refused.status_code == 200
    assert "greater than or equal to 1" in refused.content.decode()
    assert config_cache.lookup(r, "crm")["concurrency"] == 3
