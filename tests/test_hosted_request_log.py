"""The hosting middleware records each request of a hosted application, in the worker web process that served it
(workers.applog): method, the application's own path, status, duration, and the traceback of a view that raised.
In-process, with Django's test client against the worker configuration; a single instance records nothing."""

import pytest
from django.test import Client

from exchange import applog
from workers.applog import recorder

from .hosted_code import hosting
from .test_hosting import start, worker  # noqa: F401  (worker: this process is worker env_a)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def crm():
    recorder.take()  # what other tests left in this process's buffer
    with hosting(urlconf="tests.operator_urls"):
        start("crm")
        yield


def test_each_request_and_a_failing_view_s_traceback_are_recorded(crm, r):
    client = Client(raise_request_exception=False)
    assert client.get("/apps/crm/admin/login/?next=/secret-token").status_code == 200
    assert client.get("/apps/crm/broken/").status_code == 500
    assert client.get("/apps/ghost/").status_code == 404  # no such application: nothing to log it under
    recorder.flush()  # what the process's writer thread has not written yet

    entries, _ = applog.read(r, "crm")
    assert [(e["method"], e["path"], e["status"], e["environment"]) for e in entries] == [
        ("GET", "/broken/", 500, "env_a"), ("GET", "/admin/login/", 200, "env_a")]  # no query string
    assert entries[0]["error"] == {"type": "ZeroDivisionError", "message": "the operator's bug"}
    traceback = applog.latest_errors(r, "crm")[0]["error"]["traceback"]
    assert "tests/operator_urls.py" in traceback and traceback.endswith("ZeroDivisionError: the operator's bug\n")
    assert r.keys("appsup:log:ghost") == []


def test_a_single_instance_records_nothing(crm, settings):
    settings.APP_MODE = None
    Client().get("/apps/crm/admin/login/")
    assert recorder.take() == []
