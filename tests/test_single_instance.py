"""A single instance (APP_MODE unset, single/): admin, API and hosted applications in one process, on one
environment named local, without Redis. In-process tests of each adapter; tests/test_single_instance_processes.py
runs the real thing."""

import asyncio
import json
import re
import threading
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client

from apps import lifecycle
from apps.models import Application, Placement
from apps.refresh import staleness_warning
from environments.models import Environment
from exchange import contract, directory, redis_client
from monitoring import readiness
from single import adapters, environment, resume, serving
from single.directory import LocalDirectory
from single.runner import LocalRunner
from workers import provisioning
from workers.models import HostedState

from .factories import PASSWORD, create_application

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "single-instance-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LOCAL = "local"


@pytest.fixture(autouse=True)
def single(settings):
    """This process is a single instance, configured as settings.py and single's AppConfig configure one. The
    Redis URLs the suite's fixtures set stay: any use of Redis fails (exchange.redis_client), so none goes unseen."""
    settings.APP_MODE = ""
    settings.APP_DISCOVERY_ADAPTER = "local"
    settings.APP_PROCESS_ADAPTER = "local"
    settings.ENVIRONMENT_NAME = LOCAL
    settings.SUPERVISOR_API_TOKEN = TOKEN
    replaced = adapters.install()
    environment.ensure()
    yield
    adapters.restore(replaced)


def api(method, path, body=None):
    client = Client()
    kwargs = {"headers": AUTH}
    if method != "get":
        kwargs.update(data=json.dumps(body) if body is not None else "", content_type="application/json")
    return getattr(client, method)(path, **kwargs)


def create(name="crm", **extra):
    body = {"name": name, "display_name": name.upper(), "admin_username": "boss", "admin_password": PASSWORD, **extra}
    response = api("post", "/api/apps/", body)
    assert response.status_code == 201, response.content
    return response.json()


def log_in(client, app, username="boss", password=PASSWORD):
    page = client.get(f"/apps/{app}/admin/login/?next=/apps/{app}/admin/")
    assert page.status_code == 200, page.content[:300]
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
    return client.post(f"/apps/{app}/admin/login/?next=/apps/{app}/admin/",
                       {"username": username, "password": password, "csrfmiddlewaretoken": token})


# -- configuration and environments --------------------------------------------------------------------------------


def test_an_application_created_without_environments_is_placed_on_local():
    app = create()
    assert app["environments"] == [LOCAL]
    assert app["desired_state"] == contract.STOPPED
    assert list(Placement.objects.values_list("environment__name", flat=True)) == [LOCAL]


def test_naming_local_explicitly_works_and_an_unknown_environment_is_still_refused():
    assert create("crm", environments=[LOCAL])["environments"] == [LOCAL]
    response = api("post", "/api/apps/", {"name": "erp", "environments": ["env_a"], "admin_username": "boss",
                                         "admin_password": PASSWORD})
    assert response.status_code == 400
    assert "Unknown environment: env_a" in response.json()["errors"]["environments"][0]


def test_the_environments_list_is_local_online_with_no_heartbeat_needed():
    Environment.objects.filter(name=LOCAL).update(last_heartbeat_at=None)
    body = api("get", "/api/environments/").json()
    assert [(e["name"], e["status"]) for e in body["environments"]] == [(LOCAL, contract.ONLINE)]
    assert Environment.objects.online().filter(name=LOCAL).exists()
    assert "warning" not in body


def test_migrate_of_the_own_database_registers_local_but_a_hosted_database_is_left_alone():
    from django.apps import apps as django_apps

    Environment.objects.all().delete()
    config = django_apps.get_app_config("environments")
    environment.after_migrate(sender=config, using=provisioning.alias("crm"))
    assert not Environment.objects.exists()
    environment.after_migrate(sender=config, using="default")
    assert list(Environment.objects.values_list("name", flat=True)) == [LOCAL]


def test_pages_do_not_warn_about_a_controller_a_single_instance_does_not_have():
    assert staleness_warning() is None
    create()
    response = api("get", "/api/apps/")
    assert "warning" not in response.json()


def test_the_admin_add_form_offers_local_first():
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_superuser("op", "op@example.com", PASSWORD)
    client = Client()
    client.force_login(get_user_model().objects.get(username="op"))
    page = client.get("/admin/apps/application/add/").content.decode()
    assert re.search(r'<option value="local" selected>local</option>', page), page


def test_redis_is_never_used_asking_for_it_is_an_error_not_a_server_started():
    import redis

    with pytest.raises(redis.ConnectionError, match="single instance"):
        redis_client.supervisor_redis()


def test_readyz_checks_the_database_only():
    assert readiness.problems() == {}
    response = Client().get("/readyz")
    assert response.status_code == 200
    assert "redis" not in response.content.decode().lower()


# -- lifecycle in process ------------------------------------------------------------------------------------------


def test_start_runs_in_this_process_and_the_hosted_admin_answers_then_stop_answers_503():
    create()
    response = api("post", "/api/apps/crm/start")
    assert response.status_code == 200, response.content
    assert response.json()["statuses"][LOCAL]["state"] == contract.RUNNING
    assert HostedState.objects.get(app="crm").state == contract.RUNNING

    client = Client(enforce_csrf_checks=True)
    assert client.get("/apps/crm/admin/")["Location"] == "/apps/crm/admin/login/?next=/apps/crm/admin/"
    response = log_in(client, "crm")
    assert response.status_code == 302 and response["Location"] == "/apps/crm/admin/"
    assert "Site administration" in client.get("/apps/crm/admin/").content.decode()

    assert api("post", "/api/apps/crm/stop").status_code == 200
    stopped = client.get("/apps/crm/admin/")
    assert stopped.status_code == 503
    assert "is stopped" in stopped.content.decode()


def test_an_application_never_started_answers_503_not_started_and_an_unknown_one_404():
    create()
    assert Client().get("/apps/crm/admin/").status_code == 503
    assert Client().get("/apps/nope/admin/").status_code == 404


def test_startapp_sequential_starts_on_local():
    create()
    out = StringIO()
    call_command("startapp_sequential", "crm", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("local: running (") and lines[-1] == "crm is running on local"
    assert Placement.objects.get().state == contract.RUNNING


def test_a_failed_start_is_an_error_with_its_traceback_and_a_409(monkeypatch):
    create()

    def broken(app):
        raise RuntimeError("disk full")

    monkeypatch.setattr(provisioning, "migrate", broken)
    response = api("post", "/api/apps/crm/start")
    assert response.status_code == 409
    assert response.json()["error"].endswith("on local: RuntimeError: disk full")
    assert response.json()["environment"] == LOCAL
    placement = Placement.objects.get()
    assert placement.state == contract.ERROR and "RuntimeError: disk full" in placement.traceback


def test_delete_removes_the_application_and_its_database_when_asked():
    create()
    assert api("post", "/api/apps/crm/start").status_code == 200
    assert provisioning.database_exists("crm")
    assert api("delete", "/api/apps/crm/?drop_database=true").status_code == 204
    assert not Application.objects.exists() and not HostedState.objects.exists()
    assert not provisioning.database_exists("crm")


def test_one_operation_per_application_at_a_time_in_this_process():
    runner = LocalRunner()
    with runner.held("crm", 0):
        with pytest.raises(lifecycle.OperationInProgress):
            with runner.held("crm", 0):
                pass
        with runner.held("erp", 0):  # another application is not held up
            pass
    with runner.held("crm", 0):  # released
        pass


def test_the_lock_waits_for_the_holder_up_to_its_wait():
    runner = LocalRunner()
    released = threading.Event()

    def hold():
        with runner.held("crm", 0):
            released.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        with pytest.raises(lifecycle.OperationInProgress):
            with runner.held("crm", 0.1):
                pass
    finally:
        released.set()
        holder.join()
    with runner.held("crm", 1):
        pass


# -- discovery from the own database -------------------------------------------------------------------------------


def test_the_local_directory_reads_placements_from_the_database():
    lookup = LocalDirectory().lookup
    assert lookup("crm") is None
    create_application("crm", [LOCAL])
    view = lookup("crm")
    assert view.environment_names == [LOCAL] and view.statuses == {}  # never started: nothing reported
    Placement.objects.update(state=contract.ERROR, error="boom")
    Placement.objects.filter(state_at__isnull=True).update(state_at="2026-01-01T00:00:00Z")
    assert lookup("crm").statuses[LOCAL]["state"] == contract.ERROR
    assert directory.hosted_source.__class__ is LocalDirectory


# -- the single instance's reconcile at start ----------------------------------------------------------------------


def test_resume_starts_again_what_should_run_and_leaves_the_rest():
    create("crm")
    create("erp")
    assert api("post", "/api/apps/crm/start").status_code == 200
    assert api("post", "/api/apps/erp/start").status_code == 200
    assert api("post", "/api/apps/erp/stop").status_code == 200
    # A crash mid-start, as the process finds it when it starts again.
    Placement.objects.filter(application__name="crm").update(state=contract.STARTING)
    provisioning.disconnect("crm")

    assert resume.resume() == ["crm"]
    assert dict(Placement.objects.values_list("application__name", "state")) == {
        "crm": contract.RUNNING, "erp": contract.STOPPED}
    assert resume.resume() == []  # nothing left to do


def test_resume_starts_a_desired_running_application_whose_start_had_failed():
    create()
    Application.objects.update(desired_state=contract.RUNNING)
    Placement.objects.update(state=contract.ERROR, error="earlier failure")
    assert resume.resume() == ["crm"]
    assert Placement.objects.get().state == contract.RUNNING


# -- the ASGI application ------------------------------------------------------------------------------------------


def test_the_live_events_socket_says_live_updates_need_a_supervisor():
    sent = []
    incoming = [{"type": "websocket.connect"}]

    async def receive():
        return incoming.pop(0)

    async def send(message):
        sent.append(message)

    asyncio.run(serving._not_live({"type": "websocket", "path": "/ws/events/"}, receive, send))
    assert sent[0] == {"type": "websocket.accept"}
    assert json.loads(sent[1]["text"]) == {"type": "refused", "error": serving.NOT_LIVE}
    assert sent[2] == {"type": "websocket.close", "code": serving.REFUSED_CLOSE}


# -- the admin -----------------------------------------------------------------------------------------------------


@pytest.fixture
def staff_client():
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_superuser("op", "op@example.com", PASSWORD)
    client = Client()
    client.force_login(user)
    return client


def test_the_admin_pages_answer_without_redis(staff_client):
    create()
    assert api("post", "/api/apps/crm/start").status_code == 200
    crm = Application.objects.get(name="crm")
    for path in ("/admin/", "/admin/apps/application/", f"/admin/apps/application/{crm.pk}/change/",
                 "/admin/environments/environment/", "/metrics"):
        response = staff_client.get(path)
        assert response.status_code == 200, (path, response.status_code)
    changelist = staff_client.get("/admin/environments/environment/").content.decode()
    assert "local" in changelist and "No supervisor controller" not in changelist


def test_the_admin_start_and_stop_actions_run_in_process(staff_client):
    create()
    crm = Application.objects.get(name="crm")
    for command, state in (("start", contract.RUNNING), ("stop", contract.STOPPED)):
        page = staff_client.post("/admin/apps/application/", {"action": command, "_selected_action": [crm.pk],
                                                              "post": "yes"}, follow=True)
        assert page.status_code == 200
        assert Placement.objects.get().state == state
