"""Each application's request log, errors and request counters (exchange.applog): written in batches by the worker
web processes (workers.applog), read by the supervisor's API (GET /api/apps/<name>/logs), its admin's Logs page and
/metrics. Real Redis; forged, malformed and oversized entries are planted there with a plain client."""

import json
import time
from unittest import mock

import pytest
import redis
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from exchange import applog, contract, signing
from workers.applog import Recorder

from .factories import create_application, register_environment

pytestmark = pytest.mark.django_db

TOKEN = "logs-token-for-tests-0123456789ab"


def record(recorder, app, path="/", status=200, seconds=0.003, error=None, method="GET"):
    recorder.note(app, method, path, status, seconds, error)


@pytest.fixture
def worker_env(settings):
    settings.ENVIRONMENT_NAME = "env_a"


@pytest.fixture
def crm():
    register_environment("env_a")
    register_environment("env_b")
    return create_application("crm", ["env_a", "env_b"])


def api(client, settings, where, **query):
    settings.SUPERVISOR_API_TOKEN = TOKEN
    return client.get(f"/api/apps/{where}", query, headers={"Authorization": f"Bearer {TOKEN}"})


# -- writing -----------------------------------------------------------------------------------------------------


def test_a_batch_is_written_newest_first_with_errors_apart(r, worker_env):
    recorder = Recorder(background=False)
    record(recorder, "crm", "/a/")
    record(recorder, "crm", "/broken/", 500, error=("ZeroDivisionError", "boom", "Traceback …\nZeroDivisionError: boom"))
    record(recorder, "crm", "/c/", 404)
    assert recorder.flush() == 3

    entries, skipped = applog.read(r, "crm")
    assert [(e["path"], e["status"]) for e in entries] == [("/c/", 404), ("/broken/", 500), ("/a/", 200)]
    assert entries[1]["error"] == {"type": "ZeroDivisionError", "message": "boom"}
    assert skipped == 0
    errors, _ = applog.read(r, "crm", applog.Filters(errors=True))
    assert [e["error"]["traceback"] for e in errors] == ["Traceback …\nZeroDivisionError: boom"]
    assert r.ttl(contract.app_log_key("crm")) > 0


def test_the_lists_stay_bounded_in_count_and_bytes(r, worker_env):
    recorder = Recorder(background=False)
    for i in range(contract.LOG_KEEP + 30):
        record(recorder, "crm", f"/{i}/" + "x" * 5000, 500,
               error=("ValueError", "m" * 5000, "start of the traceback\n" + "frame\n" * 20000 + "ValueError: the end"))
    recorder.flush()

    assert r.llen(contract.app_log_key("crm")) == contract.LOG_KEEP
    assert r.llen(contract.app_errors_key("crm")) == contract.ERRORS_KEEP
    for raw in r.lrange(contract.app_log_key("crm"), 0, -1):
        assert len(signing.unseal(raw)) <= contract.LOG_ENTRY_BYTES
    for raw in r.lrange(contract.app_errors_key("crm"), 0, -1):
        assert len(signing.unseal(raw)) <= contract.ERROR_ENTRY_BYTES
    newest = applog.read(r, "crm", applog.Filters(errors=True), limit=1)[0][0]
    assert newest["path"].startswith(f"/{contract.LOG_KEEP + 29}/")
    assert newest["error"]["traceback"].endswith("ValueError: the end")  # the end of a traceback is kept


def test_requests_are_never_held_back_by_redis(worker_env):
    recorder = Recorder(write=mock.Mock(side_effect=redis.ConnectionError("gone")), background=False)
    record(recorder, "crm")
    assert recorder.flush() == 1  # no exception: the requests' logs are lost, not the requests
    assert recorder.dropped == 1


def test_the_buffer_is_bounded_while_nothing_is_written(worker_env, monkeypatch):
    monkeypatch.setattr("workers.applog.PENDING_LIMIT", 5)
    recorder = Recorder(write=lambda batch: None, background=False)
    for i in range(8):
        record(recorder, "crm", f"/{i}/")
    assert [item[2] for item in recorder.take()] == ["/3/", "/4/", "/5/", "/6/", "/7/"]
    assert recorder.dropped == 3


# -- the API -------------------------------------------------------------------------------------------------------


def test_the_api_filters_by_status_path_environment_and_limit(client, settings, r, crm):
    settings.ENVIRONMENT_NAME = "env_a"
    recorder = Recorder(background=False)
    record(recorder, "crm", "/notes/1/", 200)
    record(recorder, "crm", "/notes/2/", 404)
    record(recorder, "crm", "/other/", 500, error=("KeyError", "'x'", "Traceback\nKeyError: 'x'"))
    recorder.flush()
    settings.ENVIRONMENT_NAME = "env_b"
    record(recorder, "crm", "/notes/3/", 200)
    recorder.flush()

    answer = api(client, settings, "crm/logs")
    assert answer.status_code == 200
    body = answer.json()
    assert [e["path"] for e in body["entries"]] == ["/notes/3/", "/other/", "/notes/2/", "/notes/1/"]
    assert body["skipped"] == 0 and body["app"] == "crm"
    assert body["entries"][0]["at"].endswith("+00:00")

    def paths(**query):
        return [e["path"] for e in api(client, settings, "crm/logs", **query).json()["entries"]]

    assert paths(status="4xx") == ["/notes/2/"]
    assert paths(path="notes") == ["/notes/3/", "/notes/2/", "/notes/1/"]
    assert paths(environment="env_b") == ["/notes/3/"]
    assert paths(limit="2") == ["/notes/3/", "/other/"]
    errors = api(client, settings, "crm/logs", errors="true").json()["entries"]
    assert [e["error"]["traceback"] for e in errors] == ["Traceback\nKeyError: 'x'"]


@pytest.mark.parametrize("query", [{"status": "6xx"}, {"errors": "maybe"}, {"limit": "0"}, {"limit": "501"},
                                   {"environment": "Not A Name"}, {"path": "x" * 301}])
def test_a_filter_that_cannot_be_is_a_400_naming_it(client, settings, crm, query):
    answer = api(client, settings, "crm/logs", **query)
    assert answer.status_code == 400
    assert list(answer.json()["fields"]) == list(query)


def test_an_unknown_application_is_a_404(client, settings, crm):
    assert api(client, settings, "nobody/logs").status_code == 404


def test_it_needs_the_view_permission(client, crm):
    from .factories import staff_user

    client.force_login(staff_user("viewer"))
    assert client.get("/api/apps/crm/logs").status_code == 403
    client.force_login(staff_user("reader", "apps.view_application"))
    assert client.get("/api/apps/crm/logs").status_code == 200


def test_forged_and_malformed_entries_are_skipped_not_a_500(client, settings, r, crm, worker_env):
    recorder = Recorder(background=False)
    record(recorder, "crm", "/real/")
    recorder.flush()
    forged = {"method": "GET", "path": "/planted/", "status": 200, "ms": 1, "environment": "env_a",
              "at": time.time(), "error": None}
    key = contract.app_log_key("crm")
    r.lpush(key, json.dumps(forged))  # unsigned
    r.lpush(key, signing.seal(b"{not json", signer="env_a"))
    r.lpush(key, signing.dumps({**forged, "status": "two hundred"}, signer="env_a"))
    r.lpush(key, signing.dumps({**forged, "environment": "../etc"}, signer="env_a"))
    r.lpush(key, signing.dumps([1, 2], signer="env_a"))
    r.lpush(key, b"\xff\xfe")
    r.lpush(key, signing.dumps(forged, signer="env_b"))  # well formed, but env_b speaking for env_a
    r.lpush(contract.app_errors_key("crm"), signing.dumps({**forged, "error": {"type": "X", "message": "no tb"}},
                                                          signer="env_a"))

    body = api(client, settings, "crm/logs").json()
    assert [e["path"] for e in body["entries"]] == ["/real/"]
    assert body["skipped"] == 7
    errors = api(client, settings, "crm/logs", errors="true").json()
    assert errors == {"app": "crm", "entries": [], "skipped": 1}


def test_redis_down_is_a_503_naming_it(client, settings, crm, redis_hung):
    answer = api(client, settings, "crm/logs")
    assert answer.status_code == 503
    assert "Redis" in answer.json()["error"]


# -- the admin -----------------------------------------------------------------------------------------------------


def test_the_logs_page_shows_requests_errors_and_filters(admin_client, r, crm, worker_env):
    recorder = Recorder(background=False)
    record(recorder, "crm", "/fine/")
    record(recorder, "crm", "/broken/", 500, error=("ZeroDivisionError", "the operator's bug",
                                                      "Traceback (most recent call last)\nZeroDivisionError: <b>"))
    recorder.flush()
    r.lpush(contract.app_log_key("crm"), b"planted")

    change = admin_client.get(f"/admin/apps/application/{crm.pk}/change/").content.decode()
    assert f'href="/admin/apps/application/{crm.pk}/logs/"' in change

    page = admin_client.get(f"/admin/apps/application/{crm.pk}/logs/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "/fine/" in text and "/broken/" in text and "the operator&#x27;s bug" in text
    assert "1 stored entry did not verify" in text

    errors = admin_client.get(f"/admin/apps/application/{crm.pk}/logs/", {"errors": "true", "status": ""})
    text = errors.content.decode()
    assert "/fine/" not in text and "ZeroDivisionError: &lt;b&gt;" in text  # escaped, never HTML

    bad = admin_client.get(f"/admin/apps/application/{crm.pk}/logs/", {"status": "9xx"})
    assert bad.status_code == 200 and "status: give one of" in bad.content.decode()


def test_the_logs_page_is_for_those_who_may_view_applications(crm):
    from .factories import staff_user

    client = Client()
    client.force_login(staff_user("nobody"))
    assert client.get(f"/admin/apps/application/{crm.pk}/logs/").status_code == 403


# -- /metrics ------------------------------------------------------------------------------------------------------


def samples(client, settings):
    settings.SUPERVISOR_API_TOKEN = TOKEN
    text = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).content.decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name.startswith(("appsup_app_request", "appsup_app_errors"))}


def test_metrics_count_requests_durations_and_errors_per_application_and_environment(client, settings, r, crm):
    settings.ENVIRONMENT_NAME = "env_a"
    recorder = Recorder(background=False)
    for seconds in (0.001, 0.02, 0.3):
        record(recorder, "crm", seconds=seconds)
    record(recorder, "crm", "/broken/", 500, 0.002, error=("E", "m", "tb"))
    record(recorder, "nobody", "/")  # not an application of this supervisor: no series
    recorder.flush()
    r.hset(contract.app_requests_key("crm"), mapping={"env_a|2xx|x": 5, "ghost|2xx": 7, "env_a|errors": "many",
                                                     "env_a|le|0.007": 3})

    found = samples(client, settings)
    app = (("app", "crm"), ("code", "2xx"), ("environment", "env_a"))
    assert found[("appsup_app_requests_total", app)] == 3
    assert found[("appsup_app_requests_total", (("app", "crm"), ("code", "5xx"), ("environment", "env_a")))] == 1
    where = (("app", "crm"), ("environment", "env_a"))
    assert found[("appsup_app_request_duration_seconds_count", where)] == 4
    assert found[("appsup_app_request_duration_seconds_bucket", where + (("le", "0.005"),))] == 2
    assert found[("appsup_app_request_duration_seconds_bucket", where + (("le", "+Inf"),))] == 4
    assert found[("appsup_app_request_duration_seconds_sum", where)] == pytest.approx(0.323)
    assert not any(dict(labels).get("app") == "nobody" or dict(labels).get("environment") == "ghost"
                   for _, labels in found)
    # "many" is no count: the series is there, at 0
    assert found[("appsup_app_errors_total", where)] == 0


# -- the live tail's hint ------------------------------------------------------------------------------------------


def test_a_write_announces_each_application_once_on_the_logs_channel(r, worker_env):
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(contract.LOGS_CHANNEL)
    recorder = Recorder(background=False)
    for path in ("/a/", "/b/"):
        record(recorder, "crm", path)
    record(recorder, "wiki")
    recorder.flush()
    heard = []
    deadline = time.monotonic() + 5
    while len(heard) < 2 and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
        if message:
            heard.append(applog.log_event_app(message["data"]))
    assert sorted(heard) == ["crm", "wiki"]
    assert pubsub.get_message(timeout=0.3) is None


def test_the_events_socket_relays_log_hints_and_drops_forged_ones():
    import asyncio

    from live.stream import Batch, Verifier

    batch = Batch()
    for data in (b'{"type": "log", "app": "crm"}', b'{"type": "log", "app": "crm"}', b'{"type": "log", "app": "../x"}',
                 b'{"type": "app", "app": "wiki"}', b"not json", b'{"type": "log", "app": ["crm"]}'):
        batch.take({"channel": contract.LOGS_CHANNEL.encode(), "data": data})
    assert asyncio.run(Verifier(None).messages(batch)) == [{"type": "log", "app": "crm"}]


def test_a_counter_overwritten_with_text_breaks_only_itself(r, worker_env):
    r.hset(contract.app_requests_key("crm"), "env_a|2xx", "not a number")
    recorder = Recorder(background=False)
    record(recorder, "crm", "/still-logged/")
    assert recorder.flush() == 1 and recorder.dropped == 0
    assert [e["path"] for e in applog.read(r, "crm")[0]] == ["/still-logged/"]
    assert r.hget(contract.app_requests_key("crm"), "env_a|le|0.005") == b"1"
