"""GET /metrics: Prometheus text over the supervisor's database, for the API token or a staff session only."""

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from prometheus_client.parser import text_string_to_metric_families

from apps import lifecycle
from monitoring import metrics
from monitoring.models import CommandDuration

from .factories import create_application, mirror, register_environment, staff_user

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-for-tests-01234567"


@pytest.fixture
def scrape(client, settings):
    settings.SUPERVISOR_API_TOKEN = TOKEN

    def get(**headers):
        return client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}", **headers})

    return get


def samples(response):
    """{(name, frozenset of label items): value} of a scrape."""
    text = response.content.decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_anonymous_scrape_is_refused_with_401_and_no_data(client, settings):
    settings.SUPERVISOR_API_TOKEN = TOKEN
    register_environment("env_a")

    response = client.get("/metrics")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert b"appsup_" not in response.content
    wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and b"appsup_" not in wrong.content


def test_a_staff_session_with_both_view_permissions_may_scrape(client):
    client.force_login(staff_user("ops", "apps.view_application", "environments.view_environment"))
    assert client.get("/metrics").status_code == 200
    client.force_login(staff_user("half", "apps.view_application"))
    refused = client.get("/metrics")
    assert refused.status_code == 403 and refused.json()["permission"] == "environments.view_environment"
    client.force_login(get_user_model().objects.create_user("visitor", password="x"))
    assert client.get("/metrics").status_code == 401


def test_environment_gauges_say_which_are_up_and_their_status(scrape):
    register_environment("env_a")
    register_environment("env_b", heartbeat_at=0)  # 1970: offline

    response = scrape()

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert 'appsup_environment_up{environment="env_a"} 1.0' in response.content.decode()
    found = samples(response)
    assert found[("appsup_environment_up", frozenset({("environment", "env_b")}))] == 0
    statuses = {dict(labels)["environment"]: (dict(labels)["status"], value)
                for (name, labels), value in found.items() if name == "appsup_environment_status"}
    assert statuses == {"env_a": ("online", 1), "env_b": ("offline", 1)}  # one series each: its current status
    assert found[("appsup_environment_last_heartbeat_timestamp_seconds", frozenset({("environment", "env_b")}))] == 0


def test_placements_are_counted_by_state_and_unknown_on_an_offline_environment(scrape):
    register_environment("env_a")
    register_environment("env_b", heartbeat_at=0)
    create_application("crm", ["env_a", "env_b"])
    create_application("erp", ["env_a"])

    found = samples(scrape())

    def placements(state):
        return found[("appsup_placements", frozenset({("state", state)}))]

    assert placements("stopped") == 2  # crm and erp on env_a
    assert placements("unknown") == 1  # crm on env_b, offline
    assert placements("running") == 0 and placements("error") == 0
    assert found[("appsup_applications", frozenset({("desired_state", "stopped")}))] == 2
    assert found[("appsup_applications", frozenset({("desired_state", "running")}))] == 0
    assert found[("appsup_applications_drifting", frozenset())] == 0


def test_controller_gauges_appear_once_a_controller_has_run(scrape):
    assert not any(name == "appsup_controller_last_pass_timestamp_seconds" for name, _ in samples(scrape()))
    mirror()
    found = samples(scrape())
    assert found[("appsup_controller_last_pass_timestamp_seconds", frozenset())] > 0
    assert found[("appsup_controller_redis_up", frozenset())] == 1


def test_command_durations_form_a_histogram_per_command_environment_and_outcome(scrape):
    for seconds in (0.05, 0.3, 7.0):
        metrics.observe_step("start", lifecycle.Step("env_a", True, "running", seconds=seconds))
    metrics.observe_step("start", lifecycle.Step("env_b", False, "unknown", "offline", kind=lifecycle.OFFLINE))

    found = samples(scrape())

    ok = {("command", "start"), ("environment", "env_a"), ("outcome", "ok")}

    def bucket(le):
        return found[("appsup_command_duration_seconds_bucket", frozenset(ok | {("le", le)}))]

    assert (bucket("0.1"), bucket("0.5"), bucket("5.0"), bucket("10.0"), bucket("+Inf")) == (1, 2, 2, 3, 3)
    assert found[("appsup_command_duration_seconds_count", frozenset(ok))] == 3
    assert found[("appsup_command_duration_seconds_sum", frozenset(ok))] == pytest.approx(7.35)
    offline = frozenset({("command", "start"), ("environment", "env_b"), ("outcome", "offline")})
    assert found[("appsup_command_duration_seconds_count", offline)] == 1


def test_a_step_counted_by_two_processes_at_once_creates_one_series(scrape):
    # What a second observer finds when the first created the series between its UPDATE and INSERT.
    CommandDuration.objects.observe("stop", "env_a", "ok", 0.2)
    CommandDuration.objects.bulk_create(
        [CommandDuration(command="stop", environment="env_a", outcome="ok", le=1.0)], ignore_conflicts=True)
    CommandDuration.objects.observe("stop", "env_a", "ok", 0.2)
    assert CommandDuration.objects.filter(command="stop", le=1.0).get().count == 2


def test_the_number_of_queries_does_not_grow_with_environments_and_applications(scrape):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    metrics.observe_step("start", lifecycle.Step("env_a", True, "running", seconds=1))
    with CaptureQueriesContext(connection) as few:
        assert scrape().status_code == 200
    for n in range(8):
        register_environment(f"env_{n}")
        create_application(f"app{n}", [f"env_{n}", "env_a"])
        metrics.observe_step("stop", lifecycle.Step(f"env_{n}", True, "stopped", seconds=0.2))
    with CaptureQueriesContext(connection) as many:
        assert scrape().status_code == 200
    assert len(many) == len(few)


def test_an_openmetrics_scraper_gets_openmetrics(scrape):
    register_environment("env_a")
    response = scrape(Accept="application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.decode().endswith("# EOF\n")


def test_a_database_that_does_not_answer_is_a_503_naming_it(scrape, monkeypatch):
    from django.db import OperationalError
    from django.db.models.query import QuerySet

    def refuse(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(QuerySet, "__iter__", refuse)
    response = scrape()
    assert response.status_code == 503
    assert "database" in response.json()["error"]


def _proxy_requests(*paths):
    """Requests through the access proxy's ASGI handler, in one event loop; their statuses."""
    import asyncio

    from proxy import asgi as proxy_asgi
    from proxy import upstream

    async def one(path):
        scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
                 "headers": [(b"host", b"supervisor.test")], "scheme": "http", "client": ("127.0.0.1", 5000),
                 "server": ("127.0.0.1", 8000), "http_version": "1.1"}
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        await proxy_asgi.handle_http(scope, receive, send)
        return sent[0]["status"]

    async def all_of_them():
        try:
            return [await one(path) for path in paths]
        finally:
            await upstream.close()

    proxy_asgi.reset()
    return asyncio.run(all_of_them())


def test_proxy_requests_are_counted_by_application_and_status_class_unknown_names_unlabelled(scrape, r):
    from apps import cache
    from apps.models import Application
    from exchange import contract, status

    from .proxy_upstreams import EchoUpstream

    with EchoUpstream("A") as worker:
        register_environment("env_a", url=worker.url)
        for name in ("crm", "erp"):
            cache.publish(r, Application.objects.with_placements().get(pk=create_application(name, ["env_a"]).pk))
        status.write(r, "erp", "env_a", contract.RUNNING)  # crm stays stopped: the proxy answers 503
        before = samples(scrape())

        answers = _proxy_requests("/apps/crm/admin/", "/apps/erp/admin/", "/apps/erp/status?code=500", "/apps/erp",
                                  "/apps/no-such-app-1/", "/apps/no-such-app-2/", "/apps/Not A Name/")

    assert answers == [503, 200, 500, 301, 404, 404, 404]
    after = samples(scrape())

    def added(app, code):
        key = ("appsup_proxy_requests_total", frozenset({("app", app), ("code", code)}))
        return after.get(key, 0) - before.get(key, 0)

    assert (added("crm", "5xx"), added("erp", "2xx"), added("erp", "5xx"), added("erp", "3xx")) == (1, 1, 1, 1)
    assert added("", "4xx") == 3
    assert not any(dict(labels).get("app", "").startswith("no-such") for _, labels in after)
