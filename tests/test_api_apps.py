"""The applications half of the JSON API: reads, create, start/stop/restart, delete, and Redis outages."""

import json
from datetime import datetime

import pytest
from django.contrib.auth.hashers import check_password
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps import cache, lifecycle
from apps.models import Application, Placement
from exchange import cache as config_cache
from exchange import channel, contract, redis_client, status
from workers import provisioning

from .factories import PASSWORD, ThreadAgent, create_application, hold_lock, mirror, register_environment

TOKEN = "s3cret-token-for-tests-012345678"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NEW_APP = {
    "name": "crm",
    "display_name": "Customer relations",
    "environments": ["env_b", "env_a"],
    "admin_username": "boss",
    "admin_password": PASSWORD,
}


@pytest.fixture(autouse=True)
def api_token(settings):
    settings.SUPERVISOR_API_TOKEN = TOKEN


@pytest.fixture
def redis_down(settings):
    settings.APP_SUPERVISOR_REDIS_URL = "redis://127.0.0.1:1/0"
    settings.APP_COMMAND_REDIS_URL = "redis://127.0.0.1:1/0"
    redis_client.reset()
    mirror()  # the controller's pass finds Redis away, and records it for the pages


@pytest.fixture
def enqueued(monkeypatch):
    """The environments commands are sent to, in order (the real enqueue still runs)."""
    sent = []
    real = channel.enqueue

    def spy(environment, command, app, *args, **kwargs):
        sent.append((command, environment))
        return real(environment, command, app, *args, **kwargs)

    monkeypatch.setattr(channel, "enqueue", spy)
    return sent


def get(client, path):
    return client.get(path, headers=AUTH)


def post(client, path, body=None):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body if body is not None else {})
    return client.post(path, data, content_type="application/json", headers=AUTH)


def delete(client, path):
    return client.delete(path, headers=AUTH)


@pytest.fixture(autouse=True)
def _controller(controller_running):
    pass


# -- reads ---------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_list_shows_each_app_with_ordered_environments_and_statuses(client, r):
    register_environment("env_a")
    register_environment("env_b", heartbeat_at=0)  # offline
    create_application("crm", ["env_b", "env_a"], display_name="Customer relations")
    status.write(r, "crm", "env_a", contract.RUNNING, now=1_700_000_000)
    status.write(r, "crm", "env_b", contract.RUNNING, now=1_700_000_000)
    mirror()

    response = get(client, "/api/apps/")

    assert response.status_code == 200
    assert "X-Supervisor-Warning" not in response
    assert response.json() == {
        "apps": [
            {
                "name": "crm",
                "display_name": "Customer relations",
                "environments": ["env_b", "env_a"],
                "desired_state": "stopped",
                "statuses": {
                    # env_b is offline: its last report is stale, so the state is unknown.
                    "env_b": {"state": "unknown", "error": None, "at": "2023-11-14T22:13:20+00:00"},
                    "env_a": {"state": "running", "error": None, "at": "2023-11-14T22:13:20+00:00"},
                },
                "concurrency": None,
                "request_timeout": None,
                "domains": [],
            }
        ],
        "next": None,
    }


@pytest.mark.django_db
def test_a_never_reported_status_has_no_time(client):
    register_environment("env_a")
    create_application("crm", ["env_a"])

    app = get(client, "/api/apps/crm/").json()

    assert app["statuses"] == {"env_a": {"state": "stopped", "error": None, "at": None}}


@pytest.mark.django_db
def test_list_costs_the_same_number_of_queries_for_one_app_or_many(client, r):
    register_environment("env_a")
    register_environment("env_b")

    def queries_for_listing():
        cache.rebuild(r)
        for placement in Placement.objects.select_related("application", "environment"):
            status.write(r, placement.application.name, placement.environment.name, contract.RUNNING)
        with CaptureQueriesContext(connection) as captured:
            response = get(client, "/api/apps/")
        assert response.status_code == 200
        return len(captured), len(response.json()["apps"])

    create_application("app0", ["env_a"])
    few = queries_for_listing()
    for i in range(1, 8):
        create_application(f"app{i}", ["env_a", "env_b"])
    many = queries_for_listing()

    assert few[1] == 1 and many[1] == 8
    assert few[0] == many[0]


@pytest.mark.django_db
def test_list_shows_what_the_controller_mirrored_and_an_older_report_never_replaces_it(client, r):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    create_application("erp", ["env_a"])
    status.write(r, "crm", "env_a", contract.ERROR, error="RuntimeError: disk full", traceback="Traceback …",
                 now=1_700_000_000)
    mirror()
    status.write(r, "crm", "env_a", contract.STARTING, now=1_600_000_000)  # older than what was mirrored
    mirror()

    apps = {a["name"]: a for a in get(client, "/api/apps/").json()["apps"]}

    assert apps["crm"]["statuses"]["env_a"] == {"state": "error", "error": "RuntimeError: disk full",
                                                "at": "2023-11-14T22:13:20+00:00"}
    assert apps["erp"]["statuses"]["env_a"]["state"] == "stopped"
    crm = Placement.objects.get(application__name="crm")
    assert (crm.state, crm.error, crm.traceback) == ("error", "RuntimeError: disk full", "Traceback …")
    assert crm.state_at.timestamp() == 1_700_000_000


@pytest.mark.django_db
def test_detail_of_an_unknown_app_is_a_json_404(client):
    response = get(client, "/api/apps/nope/")
    assert response.status_code == 404
    assert "nope" in response.json()["error"]


# -- create --------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_answers_201_with_the_app_and_stores_only_a_password_hash(client):
    register_environment("env_a")
    register_environment("env_b")

    response = post(client, "/api/apps/", NEW_APP)

    assert response.status_code == 201, response.json()
    assert response["Location"] == "/api/apps/crm/"
    assert response.json() == {
        "name": "crm",
        "display_name": "Customer relations",
        "environments": ["env_b", "env_a"],
        "desired_state": "stopped",
        "statuses": {
            "env_b": {"state": "stopped", "error": None, "at": None},
            "env_a": {"state": "stopped", "error": None, "at": None},
        },
        "concurrency": None,
        "request_timeout": None,
        "domains": [],
    }
    app = Application.objects.get(name="crm")
    assert app.admin_username == "boss"
    assert PASSWORD not in app.admin_password_hash and check_password(PASSWORD, app.admin_password_hash)
    # One application's page also says what its environments report pending (nothing yet: never started).
    assert get(client, "/api/apps/crm/").json() == dict(response.json(), pending_migrations={})


@pytest.mark.django_db(transaction=True)
def test_a_created_app_is_published_to_the_configuration_cache(client, r):
    register_environment("env_a")
    assert post(client, "/api/apps/", dict(NEW_APP, environments=["env_a"])).status_code == 201
    assert config_cache.lookup(r, "crm")["environments"] == ["env_a"]


@pytest.mark.django_db(transaction=True)
def test_a_created_app_may_have_its_own_share_of_the_workers(client, r):
    register_environment("env_a")
    response = post(client, "/api/apps/", dict(NEW_APP, environments=["env_a"], concurrency=3, request_timeout=None))
    assert response.status_code == 201, response.json()
    assert (response.json()["concurrency"], response.json()["request_timeout"]) == (3, None)
    entry = config_cache.lookup(r, "crm")
    assert (entry["concurrency"], entry["request_timeout"]) == (3, None)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change, field, message",
    [
        ({"name": "Bad Name"}, "name", "not a valid name"),
        ({"name": "1crm"}, "name", "not a valid name"),
        ({"name": "api"}, "name", "reserved"),
        ({"environments": ["env_a", "env_z"]}, "environments", "Unknown environment: env_z"),
        ({"environments": "env_a"}, "environments", "list"),
        ({"environments": []}, "environments", "required"),
        ({"admin_password": "short"}, "admin_password", "too short"),
        ({"admin_username": "bad user!"}, "admin_username", "Enter a valid username"),
        ({"concurrency": 0}, "concurrency", "greater than or equal to 1"),
        ({"concurrency": "4"}, "concurrency", "whole number"),
        ({"concurrency": 2.5}, "concurrency", "whole number"),
        ({"request_timeout": -1}, "request_timeout", "greater than or equal to 0"),
        ({"request_timeout": True}, "request_timeout", "whole number"),
    ],
)
def test_create_refuses_invalid_fields_with_400_naming_them(client, change, field, message):
    register_environment("env_a")
    register_environment("env_b")

    response = post(client, "/api/apps/", dict(NEW_APP, **change))

    assert response.status_code == 400
    errors = response.json()["errors"]
    assert list(errors) == [field]
    assert any(message in m for m in errors[field]), errors
    assert not Application.objects.exists()


@pytest.mark.django_db
def test_create_refuses_a_duplicate_name(client):
    register_environment("env_a")
    create_application("crm", ["env_a"])

    response = post(client, "/api/apps/", dict(NEW_APP, environments=["env_a"]))

    assert response.status_code == 400
    assert "already exists" in response.json()["errors"]["name"][0]


@pytest.mark.django_db
def test_create_names_every_missing_field(client):
    response = post(client, "/api/apps/", {"display_name": "only this"})

    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"name", "environments", "admin_username", "admin_password"}


@pytest.mark.django_db
@pytest.mark.parametrize("body", ["{not json", '["a", "list"]', "", b"\xff\xfe"])
def test_create_refuses_a_body_that_is_not_a_json_object(client, body):
    response = post(client, "/api/apps/", body)

    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["__all__"]


# -- start, stop, restart, delete -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_start_runs_each_environment_in_order_and_answers_the_app(client, enqueued):
    with ThreadAgent("env_a"), ThreadAgent("env_b"):
        create_application("crm", ["env_b", "env_a"])
        response = post(client, "/api/apps/crm/start?timeout=60")

    assert response.status_code == 200, response.json()
    assert enqueued == [("start", "env_b"), ("start", "env_a")]
    app = response.json()
    assert app["desired_state"] == "running"
    statuses = app["statuses"]
    assert statuses["env_b"]["state"] == statuses["env_a"]["state"] == "running"
    # env_a started only after env_b was running.
    assert datetime.fromisoformat(statuses["env_b"]["at"]) < datetime.fromisoformat(statuses["env_a"]["at"])


@pytest.mark.django_db(transaction=True)
def test_start_with_an_offline_environment_waits_naming_it_sends_nothing_and_keeps_the_intent(client, enqueued):
    register_environment("env_a")
    register_environment("env_b", heartbeat_at=0)
    create_application("crm", ["env_b", "env_a"])

    response = post(client, "/api/apps/crm/start?timeout=5")

    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"message", "environment", "pending", "app"}
    assert body["environment"] == "env_b"
    assert body["message"].startswith("start crm waits for env_b: environment env_b is offline")
    assert body["app"]["desired_state"] == "running"
    assert body["pending"]["desired_state"] == "running" and body["pending"]["waiting_for"] == ["env_b"]
    assert body["pending"]["done"] == []
    assert Application.objects.get(name="crm").desired_state == "running"
    assert enqueued == []
    assert channel.queue_for("env_b").count == 0 and channel.queue_for("env_a").count == 0


@pytest.mark.django_db(transaction=True)
def test_stop_and_restart_answer_the_app_in_its_new_state(client):
    with ThreadAgent("env_a"):
        create_application("crm", ["env_a"])
        assert post(client, "/api/apps/crm/start?timeout=60").status_code == 200

        stopped = post(client, "/api/apps/crm/stop?timeout=60")
        assert stopped.status_code == 200, stopped.json()
        assert stopped.json()["desired_state"] == "stopped"
        assert stopped.json()["statuses"]["env_a"]["state"] == "stopped"

        restarted = post(client, "/api/apps/crm/restart?timeout=60")
        assert restarted.status_code == 200, restarted.json()
        assert restarted.json()["desired_state"] == "running"
        assert restarted.json()["statuses"]["env_a"]["state"] == "running"


@pytest.mark.django_db(transaction=True)
def test_a_command_nobody_answers_times_out_with_504_naming_the_environment(client):
    register_environment("env_a")  # registered, but no worker consumes its queue
    create_application("crm", ["env_a"])

    response = post(client, "/api/apps/crm/start?timeout=1")

    assert response.status_code == 504
    assert response.json()["environment"] == "env_a"
    assert "timeout" in response.json()["error"]


@pytest.mark.django_db(transaction=True)
def test_a_command_while_another_runs_is_refused_with_423(monkeypatch, client, r):
    monkeypatch.setattr(lifecycle, "LOCK_WAIT", 0.3)
    register_environment("env_a")
    create_application("crm", ["env_a"])
    hold_lock("crm")

    response = post(client, "/api/apps/crm/stop")

    assert response.status_code == 423
    assert response.json() == {"error": response.json()["error"], "environment": None}
    assert "in progress" in response.json()["error"]


@pytest.mark.django_db
@pytest.mark.parametrize("timeout", ["soon", "0", "-5", "nan", "999999"])
def test_a_bad_timeout_is_a_400(client, timeout):
    register_environment("env_a")
    create_application("crm", ["env_a"])

    response = post(client, f"/api/apps/crm/start?timeout={timeout}")

    assert response.status_code == 400
    assert response.json()["environment"] is None
    assert "timeout" in response.json()["error"]


@pytest.mark.django_db
def test_commands_on_an_unknown_app_are_404(client):
    assert post(client, "/api/apps/nope/start").status_code == 404
    assert delete(client, "/api/apps/nope/").status_code == 404


@pytest.mark.django_db
def test_commands_take_post_only(client):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    response = get(client, "/api/apps/crm/start")
    assert response.status_code == 405
    assert response["Allow"] == "POST"


@pytest.mark.django_db(transaction=True)
def test_delete_stops_the_app_everywhere_and_removes_it(client, r, enqueued):
    with ThreadAgent("env_a"):
        create_application("crm", ["env_a"])
        assert post(client, "/api/apps/crm/start?timeout=60").status_code == 200

        response = delete(client, "/api/apps/crm/?timeout=60")

    assert response.status_code == 204
    assert response.content == b""
    assert enqueued == [("start", "env_a"), ("remove", "env_a")]
    assert get(client, "/api/apps/crm/").status_code == 404
    assert not Application.objects.exists()
    assert config_cache.lookup(r, "crm") is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("query, dropped", [("", False), ("&drop_database=false", False),
                                            ("&drop_database=true", True)])
def test_delete_keeps_the_database_unless_asked_to_drop_it(client, query, dropped):
    with ThreadAgent("env_a"):
        create_application("crm", ["env_a"])
        assert post(client, "/api/apps/crm/start?timeout=60").status_code == 200
        assert provisioning.database_exists("crm")

        assert delete(client, f"/api/apps/crm/?timeout=60{query}").status_code == 204

    assert provisioning.database_exists("crm") is not dropped
    provisioning.drop_database("crm")


@pytest.mark.django_db
def test_delete_with_a_bad_drop_database_value_is_a_400_and_keeps_the_app(client):
    register_environment("env_a")
    create_application("crm", ["env_a"])

    response = delete(client, "/api/apps/crm/?drop_database=maybe")

    assert response.status_code == 400
    assert "drop_database='maybe'" in response.json()["error"]
    assert Application.objects.filter(name="crm").exists()


@pytest.mark.django_db(transaction=True)
def test_delete_with_an_offline_environment_is_refused_and_keeps_the_app(client):
    register_environment("env_b", heartbeat_at=0)
    create_application("crm", ["env_b"])

    response = delete(client, "/api/apps/crm/")

    assert response.status_code == 409
    assert response.json()["environment"] == "env_b"
    assert Application.objects.filter(name="crm").exists()


# -- Redis unavailable ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_while_redis_is_down_reads_answer_from_the_database_with_a_warning(client, redis_down):
    from environments.models import Environment

    Environment.objects.create(name="env_a", url="http://env_a.test:8000")
    create_application("crm", ["env_a"])

    listing = get(client, "/api/apps/")
    detail = get(client, "/api/apps/crm/")

    assert listing.status_code == 200 and detail.status_code == 200
    assert "Redis is unavailable" in listing["X-Supervisor-Warning"]
    assert "Redis is unavailable" in detail["X-Supervisor-Warning"]
    assert [a["name"] for a in listing.json()["apps"]] == ["crm"]
    assert detail.json()["statuses"] == {"env_a": {"state": "unknown", "error": None, "at": None}}


@pytest.mark.django_db(transaction=True)
def test_while_redis_is_down_start_is_a_503(client, settings):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    settings.APP_SUPERVISOR_REDIS_URL = settings.APP_COMMAND_REDIS_URL = "redis://127.0.0.1:1/0"
    redis_client.reset()

    response = post(client, "/api/apps/crm/start")

    assert response.status_code == 503
    assert response.json()["environment"] is None
    assert "Redis is unavailable" in response.json()["error"]


@pytest.mark.django_db(transaction=True)
def test_a_hung_redis_costs_a_start_seconds_and_is_named_and_reads_do_not_wait_for_it(client, redis_hung):
    import time

    from environments.models import Environment

    Environment.objects.create(name="env_a", url="http://env_a.test:8000")
    create_application("crm", ["env_a"])

    began = time.monotonic()
    listing = get(client, "/api/apps/")
    read_seconds = time.monotonic() - began
    began = time.monotonic()
    started = post(client, "/api/apps/crm/start")
    start_seconds = time.monotonic() - began

    assert listing.status_code == 200 and read_seconds < 1  # reads never touch Redis
    assert started.status_code == 503
    assert started.json()["error"].startswith("Redis is unavailable") and "env_a" not in started.json()["error"]
    assert start_seconds < redis_client.SOCKET_TIMEOUT + 3


# -- pages ---------------------------------------------------------------------------------------------------


def _bare_apps(count):
    """COUNT applications without placements, in one query: enough to page through."""
    Application.objects.bulk_create(Application(name=f"app{i:04d}", admin_username="admin") for i in range(count))


@pytest.mark.django_db
def test_the_list_is_at_most_500_by_default_with_a_next_url(client):
    _bare_apps(501)

    body = get(client, "/api/apps/").json()

    assert len(body["apps"]) == 500
    assert body["apps"][0]["name"] == "app0000" and body["apps"][-1]["name"] == "app0499"
    assert body["next"] == "http://testserver/api/apps/?after=app0499"
    rest = get(client, body["next"]).json()
    assert [app["name"] for app in rest["apps"]] == ["app0500"] and rest["next"] is None


@pytest.mark.django_db
def test_following_next_walks_every_app_once_in_name_order(client):
    register_environment("env_a")
    for name in ("erp", "crm", "wiki", "blog", "shop"):
        create_application(name, ["env_a"])

    seen, url, pages = [], "/api/apps/?limit=2", 0
    while url:
        body = get(client, url).json()
        seen += [app["name"] for app in body["apps"]]
        url, pages = body["next"], pages + 1
        assert url is None or "limit=2" in url  # the page size carries over

    assert seen == ["blog", "crm", "erp", "shop", "wiki"]
    assert pages == 3


@pytest.mark.django_db
def test_a_page_that_ends_the_list_exactly_has_no_next(client):
    _bare_apps(4)
    body = get(client, "/api/apps/?limit=4").json()
    assert len(body["apps"]) == 4 and body["next"] is None
    assert get(client, "/api/apps/?after=app0003").json() == {"apps": [], "next": None}


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["limit=", "limit=0", "limit=1001", "limit=-1", "limit=ten", "limit=1.5", "limit=%EF%BC%95",
                                   "after=", "after=a%20b", "after=a%00b", "after=" + "a" * 101, "after=%C3%A9"])
def test_a_bad_limit_or_cursor_is_a_400(client, query):
    response = get(client, f"/api/apps/?{query}")
    assert response.status_code == 400
    assert query.split("=")[0] in response.json()["error"]


@pytest.mark.django_db
def test_a_page_costs_the_same_queries_and_reads_only_its_rows_whatever_the_number_of_apps(client, r):
    register_environment("env_a")

    def page_of_two():
        with CaptureQueriesContext(connection) as captured:
            response = get(client, "/api/apps/?limit=2&after=app0000")
        assert response.status_code == 200
        assert [a["statuses"]["env_a"]["state"] for a in response.json()["apps"]] == ["stopped", "stopped"]
        return captured

    for i in range(4):
        create_application(f"app{i:04d}", ["env_a"])
    few = page_of_two()
    for i in range(4, 40):
        create_application(f"app{i:04d}", ["env_a"])
    many = page_of_two()

    assert len(few) == len(many)
    application_query = next(q["sql"] for q in many if 'FROM "apps_application"' in q["sql"])
    assert "LIMIT 3" in application_query  # the page and one more row, never the table
