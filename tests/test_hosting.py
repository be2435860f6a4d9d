"""A worker serves its hosted applications at /apps/<name>/…, each with its own database, users and sessions.

In-process, with Django's test client against the worker configuration. The test client sends every cookie it
holds whatever the cookie's path, like a client that ignores paths: applications must stay apart regardless.
"""

import json
import re
import time

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.sessions.models import Session
from django.core.exceptions import MiddlewareNotUsed
from django.db import router
from django.test import Client

from apps import cache, lifecycle
from apps.models import Application
from exchange import contract, redis_client, status
from exchange.directory import directory
from workers import commands, provisioning
from workers.hosting import HostedApplicationMiddleware
from workers.routing import using

from .conftest import free_port
from .factories import PASSWORD, ThreadAgent, create_application, register_environment
from .processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

ENV = "env_a"


@pytest.fixture(autouse=True)
def worker(settings):
    """This process is worker env_a, configured as settings.py configures a worker."""
    settings.APP_MODE = "worker"
    settings.ENVIRONMENT_NAME = ENV
    settings.ROOT_URLCONF = "workers.urls"
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    directory.clear()  # the per-process cache must not carry another test's applications
    yield
    directory.clear()


@pytest.fixture
def client():
    return Client(enforce_csrf_checks=True)


def configure(name, environments=(ENV,), state=None, error=""):
    """Publish NAME's configuration as the supervisor does and, if STATE, its status on env_a."""
    for env in environments:
        register_environment(env)
    app = create_application(name, environments)
    cache.publish(redis_client.supervisor_redis(), Application.objects.with_placements().get(pk=app.pk))
    if state:
        status.write(redis_client.supervisor_redis(), name, ENV, state, error=error)
    directory.clear()
    return app


def start(name):
    """Start NAME on env_a as the worker agent would: database, migrations, initial superuser, running."""
    app = configure(name)
    outcome = commands.start(name, ENV, {"admin_username": app.admin_username,
                                         "admin_password_hash": app.admin_password_hash})
    assert outcome["state"] == contract.RUNNING, outcome
    directory.clear()
    return app


def csrf_token(response):
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.content.decode()).group(1)


def log_in(client, app, username="admin", password=PASSWORD, **headers):
    page = client.get(f"/apps/{app}/admin/login/?next=/apps/{app}/admin/", headers=headers)
    assert page.status_code == 200
    return client.post(
        f"/apps/{app}/admin/login/?next=/apps/{app}/admin/",
        {"username": username, "password": password, "csrfmiddlewaretoken": csrf_token(page)},
        headers=headers,
    )


def users_of(app):
    return set(get_user_model().objects.using(provisioning.connect(app)).values_list("username", flat=True))


# -- the hosted admin ------------------------------------------------------------------------------------------


def test_hosted_admin_login_lists_add_change_and_logout_on_the_applications_own_database(client):
    with ThreadAgent(ENV):
        crm = create_application("crm", [ENV])
        erp = create_application("erp", [ENV])
        assert lifecycle.run(crm, contract.START, timeout=60).ok
        assert lifecycle.run(erp, contract.START, timeout=60).ok
    directory.clear()
    origin = {"Origin": "http://testserver"}

    # Not logged in: to the application's own login page, the way back included.
    response = client.get("/apps/crm/admin/")
    assert response.status_code == 302
    assert response["Location"] == "/apps/crm/admin/login/?next=/apps/crm/admin/"

    response = log_in(client, "crm", **origin)
    assert response.status_code == 302, response.content
    assert response["Location"] == "/apps/crm/admin/"

    index = client.get("/apps/crm/admin/")
    assert index.status_code == 200
    assert b"<title>Site administration | CRM</title>" in index.content
    assert b'href="/apps/crm/admin/auth/user/"' in index.content
    assert b"Environments" not in index.content  # the supervisor's models are not a hosted application's
    assert b'<a href="/apps/crm/">View site</a>' in index.content

    users = client.get("/apps/crm/admin/auth/user/")
    assert users.status_code == 200 and b">admin</a>" in users.content

    # Add a user with the add form.
    form = client.get("/apps/crm/admin/auth/user/add/")
    added = client.post(
        "/apps/crm/admin/auth/user/add/",
        {"username": "alice", "usable_password": "true", "password1": "alice-pass-123",
         "password2": "alice-pass-123", "csrfmiddlewaretoken": csrf_token(form), "_save": "Save"},
        headers=origin,
    )
    assert added.status_code == 302, added.content
    alice = get_user_model().objects.using(provisioning.alias("crm")).get(username="alice")
    assert added["Location"] == f"/apps/crm/admin/auth/user/{alice.pk}/change/"
    # "The user was added successfully": the messages cookie is crm's too.
    assert "messages" not in added.cookies and added.cookies["messages_crm"]["path"] == "/apps/crm/"
    assert b"was added successfully" in client.get(added["Location"]).content

    # Add a group, then change it with the change form.
    form = client.get("/apps/crm/admin/auth/group/add/")
    client.post("/apps/crm/admin/auth/group/add/", {"name": "sales", "csrfmiddlewaretoken": csrf_token(form)},
                headers=origin)
    group = Group.objects.using(provisioning.alias("crm")).get(name="sales")
    form = client.get(f"/apps/crm/admin/auth/group/{group.pk}/change/")
    assert form.status_code == 200
    changed = client.post(f"/apps/crm/admin/auth/group/{group.pk}/change/",
                          {"name": "sales-team", "csrfmiddlewaretoken": csrf_token(form)}, headers=origin)
    assert changed.status_code == 302 and changed["Location"] == "/apps/crm/admin/auth/group/"
    assert Group.objects.using(provisioning.alias("crm")).get(pk=group.pk).name == "sales-team"

    # Everything went to crm's database: not erp's, not the worker's own.
    assert users_of("crm") == {"admin", "alice"}
    assert users_of("erp") == {"admin"}
    assert not get_user_model().objects.using("default").filter(username="alice").exists()
    assert LogEntry.objects.using(provisioning.alias("crm")).count() == 3
    assert LogEntry.objects.using(provisioning.alias("erp")).count() == 0

    # The new user (made staff) logs in to crm, but erp has never heard of her.
    get_user_model().objects.using(provisioning.alias("crm")).filter(pk=alice.pk).update(is_staff=True)
    other = Client(enforce_csrf_checks=True)
    assert log_in(other, "crm", "alice", "alice-pass-123").status_code == 302
    refused = log_in(Client(enforce_csrf_checks=True), "erp", "alice", "alice-pass-123")
    assert refused.status_code == 200 and b"Please enter the correct username and password" in refused.content

    # Logout deletes crm's session cookie, at its path.
    index = client.get("/apps/crm/admin/")
    out = client.post("/apps/crm/admin/logout/", {"csrfmiddlewaretoken": csrf_token(index)}, headers=origin)
    assert out.status_code == 200
    gone = out.cookies["sessionid_crm"]
    assert gone.value == "" and gone["path"] == "/apps/crm/" and gone["max-age"] == 0
    assert client.get("/apps/crm/admin/")["Location"].startswith("/apps/crm/admin/login/")


def test_cookies_are_scoped_to_the_application_path_and_named_after_it(client):
    start("crm")

    page = client.get("/apps/crm/admin/login/")
    assert set(page.cookies) == {"csrftoken_crm"}
    response = log_in(client, "crm")

    assert set(response.cookies) == {"csrftoken_crm", "sessionid_crm"}
    for morsel in response.cookies.values():
        assert morsel["path"] == "/apps/crm/"
    assert response.cookies["sessionid_crm"]["httponly"]


def test_a_login_to_one_application_is_not_a_login_to_another(client):
    start("crm")
    start("erp")
    assert log_in(client, "crm").status_code == 302
    assert client.get("/apps/crm/admin/").status_code == 200

    # The client sends crm's cookies to erp too (it ignores paths): erp still asks for its own login.
    response = client.get("/apps/erp/admin/")
    assert response.status_code == 302 and response["Location"].startswith("/apps/erp/admin/login/")

    # A plain `sessionid` (the supervisor's, on Path=/) is never read by a hosted application.
    stray = Client(enforce_csrf_checks=True)
    stray.cookies["sessionid"] = client.cookies["sessionid_crm"].value
    assert stray.get("/apps/crm/admin/").status_code == 302


def test_login_through_the_proxy_passes_csrf_with_the_clients_host():
    start("crm")
    # What the supervisor's proxy sends: the client's Host, forwarded headers; the browser's Origin.
    proxied = {"Host": "localhost:14000", "X-Forwarded-Host": "localhost:14000", "X-Forwarded-Proto": "http",
               "X-Forwarded-For": "10.0.0.7", "Origin": "http://localhost:14000"}
    response = log_in(Client(enforce_csrf_checks=True), "crm", **proxied)
    assert response.status_code == 302 and response["Location"] == "/apps/crm/admin/"

    # Behind TLS the proxy says so, and the https Origin matches.
    tls = {**proxied, "X-Forwarded-Proto": "https", "Origin": "https://localhost:14000"}
    response = log_in(Client(enforce_csrf_checks=True), "crm", **tls)
    assert response.status_code == 302 and response["Location"] == "/apps/crm/admin/"

    # Directly, by the worker's own address.
    direct = {"Host": "127.0.0.1:15000", "Origin": "http://127.0.0.1:15000"}
    assert log_in(Client(enforce_csrf_checks=True), "crm", **direct).status_code == 302


def test_a_post_from_another_origin_is_refused(client):
    start("crm")
    response = log_in(client, "crm", Host="localhost:14000", Origin="http://evil.example")
    assert response.status_code == 403


def test_a_host_outside_allowed_hosts_is_refused(client):
    start("crm")
    assert client.get("/apps/crm/admin/login/", headers={"Host": "evil.example"}).status_code == 400


def test_static_files_are_linked_and_served_below_each_applications_mount_point(client):
    start("crm")
    start("erp")
    for app in ("crm", "erp"):  # each its own prefix, not whichever application asked first
        page = client.get(f"/apps/{app}/admin/login/")
        assert f'href="/apps/{app}/static/admin/css/base.css"'.encode() in page.content
    css = client.get("/apps/crm/static/admin/css/base.css")
    assert css.status_code == 200 and css["Content-Type"].startswith("text/css")


def test_mount_points_redirect_into_the_application(client):
    start("crm")
    bare = client.get("/apps/crm?x=1")
    assert bare.status_code == 301 and bare["Location"] == "/apps/crm/?x=1"
    root = client.get("/apps/crm/")
    assert root.status_code == 302 and root["Location"] == "/apps/crm/admin/"
    no_slash = client.get("/apps/crm/admin")
    assert no_slash.status_code == 301 and no_slash["Location"] == "/apps/crm/admin/"


# -- when an application cannot answer -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "error", "status_code", "code", "text"),
    [
        (None, "", 503, "not_started", "is stopped on environment env_a: it has not been started here yet"),
        (contract.STOPPED, "", 503, "stopped", "is stopped on environment env_a"),
        (contract.STOPPING, "", 503, "stopping", "is stopping on environment env_a"),
        (contract.STARTING, "", 503, "starting", "is starting on environment env_a"),
        (contract.ERROR, "OperationalError: disk <full>", 503, "error", "failed on environment env_a"),
    ],
)
def test_an_application_that_is_not_running_here_gets_a_page_that_says_why(
    client, state, error, status_code, code, text
):
    configure("crm", state=state, error=error)

    page = client.get("/apps/crm/admin/", headers={"Accept": "text/html,*/*;q=0.8"})
    assert page.status_code == status_code
    assert page["Content-Type"].startswith("text/html")
    assert text in page.content.decode()
    assert page["Cache-Control"] == "no-store"
    if state == contract.ERROR:
        assert "OperationalError: disk &lt;full&gt;" in page.content.decode()  # the reason, escaped

    answer = client.get("/apps/crm/admin/", headers={"Accept": "application/json"})
    assert answer.status_code == status_code
    body = answer.json()
    assert body["code"] == code and text in body["error"]
    # Never started here is stopped, as the supervisor's admin shows it.
    assert (body["app"], body["environment"], body["state"]) == ("crm", ENV, state or contract.STOPPED)
    assert body["reason"] == error
    if state == contract.STARTING:
        assert page["Retry-After"] == answer["Retry-After"] == "5"
    else:
        assert not page.has_header("Retry-After")


def test_a_never_started_application_is_stopped_here_and_the_page_says_how_to_start_it(client):
    configure("crm")  # no status reported yet, as the supervisor's admin shows it: stopped

    page = client.get("/apps/crm/admin/").content.decode()
    assert "<h1>CRM is stopped</h1>" in page
    assert "This application is stopped on environment env_a" in page
    assert "An operator can start it from the supervisor&#x27;s admin: Applications → crm → Start." in page
    assert 'data-code="not_started"' in page and "<code>not_started</code></footer>" in page

    answer = client.get("/apps/crm/admin/", headers={"Accept": "application/json"}).json()
    assert (answer["code"], answer["state"]) == ("not_started", contract.STOPPED)
    assert answer["advice"] == "An operator can start it from the supervisor's admin: Applications → crm → Start."


def test_an_unknown_application_is_404(client):
    page = client.get("/apps/nope/admin/")
    assert page.status_code == 404 and "There is no application named “nope”" in page.content.decode()
    answer = client.get("/apps/nope/admin/", headers={"Accept": "application/json"})
    assert answer.status_code == 404 and answer.json()["code"] == "unknown_app"


@pytest.mark.parametrize("path", ["/apps/Bad!/", "/apps/admin/", "/apps//admin/", "/apps/", "/apps"])
def test_names_that_cannot_be_applications_are_404(client, path):
    assert client.get(path).status_code == 404


def test_an_application_placed_on_another_environment_is_404_here(client):
    configure("crm", environments=["env_b"])
    status.write(redis_client.supervisor_redis(), "crm", "env_b", contract.RUNNING)

    page = client.get("/apps/crm/admin/")
    assert page.status_code == 404
    assert "not placed on environment env_a (it runs on: env_b)" in page.content.decode()
    answer = client.get("/apps/crm/admin/", headers={"Accept": "application/json"})
    assert answer.json()["code"] == "not_on_this_environment"


def test_a_stop_is_seen_within_a_second(client):
    start("crm")
    assert client.get("/apps/crm/admin/login/").status_code == 200
    stopped_at = time.monotonic()
    status.write(redis_client.supervisor_redis(), "crm", ENV, contract.STOPPED)
    wait_for(lambda: client.get("/apps/crm/admin/login/").status_code == 503, timeout=3, what="the 503")
    assert time.monotonic() - stopped_at < 1.5


def test_unreachable_redis_is_a_503_not_a_crash(client, settings):
    settings.APP_SUPERVISOR_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    redis_client.reset()
    answer = client.get("/apps/crm/admin/", headers={"Accept": "application/json"})
    assert answer.status_code == 503 and answer.json()["code"] == "configuration_unavailable"


# -- the worker's own URLs and the wiring ----------------------------------------------------------------------


def test_worker_answers_healthz_and_serves_neither_the_supervisor_admin_nor_the_api(client):
    health = client.get("/healthz")
    assert health.status_code == 200
    found = json.loads(health.content)
    assert found.pop("usage").keys() == {"cpu", "rss"}  # its agent reports it (exchange.usage)
    assert found == {"status": "ok", "role": "worker", "environment": ENV, "version": "1.0.0"}
    assert client.get("/admin/").status_code == 404
    assert client.get("/admin/login/").status_code == 404
    assert client.get("/api/apps/").status_code == 404


def test_hosted_models_are_routed_to_the_requests_application_only():
    User = get_user_model()
    assert router.db_for_read(User) == "default"
    with using(provisioning.alias("crm")):
        for model in (User, Group, LogEntry, Session):
            assert router.db_for_read(model) == provisioning.alias("crm")
            assert router.db_for_write(model) == provisioning.alias("crm")
        assert router.db_for_read(Application) == "default"  # the worker's own tables stay where they are
    assert router.db_for_write(User) == "default"


def test_only_workers_mount_hosted_applications(settings):
    settings.APP_MODE = "supervisor"
    with pytest.raises(MiddlewareNotUsed):
        HostedApplicationMiddleware(lambda request: None)


def test_the_worker_asgi_application_refuses_websockets_and_speaks_lifespan():
    import asyncio

    from asgiref.testing import ApplicationCommunicator

    from workers.serving import build

    async def django_application(scope, receive, send):  # stands in for Django: HTTP only
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    application = build(django_application)

    async def scenario():
        socket = ApplicationCommunicator(application, {"type": "websocket", "path": "/apps/crm/ws/"})
        await socket.send_input({"type": "websocket.connect"})
        assert (await socket.receive_output(2))["type"] == "websocket.close"  # before accept: HTTP 403

        lifespan = ApplicationCommunicator(application, {"type": "lifespan"})
        await lifespan.send_input({"type": "lifespan.startup"})
        assert (await lifespan.receive_output(2))["type"] == "lifespan.startup.complete"
        await lifespan.send_input({"type": "lifespan.shutdown"})
        assert (await lifespan.receive_output(2))["type"] == "lifespan.shutdown.complete"

        http = ApplicationCommunicator(application, {"type": "http", "method": "GET", "path": "/healthz"})
        await http.send_input({"type": "http.request", "body": b""})
        assert (await http.receive_output(2))["status"] == 204

    asyncio.run(scenario())


# -- Redis lost or unreachable: the last known view ----------------------------------------------------------------


def test_a_running_application_is_served_through_a_flushall_and_a_redis_outage(client, settings):
    start("crm")
    assert client.get("/apps/crm/admin/login/").status_code == 200

    redis_client.supervisor_redis().flushall()
    directory.invalidate()  # as the (re)subscribing event listener does
    assert client.get("/apps/crm/admin/login/").status_code == 200

    settings.APP_SUPERVISOR_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    redis_client.reset()
    directory.invalidate()
    assert client.get("/apps/crm/admin/login/").status_code == 200
    # Never read, nothing to fall back on: the worker says it cannot tell.
    assert client.get("/apps/erp/admin/login/").status_code == 503
