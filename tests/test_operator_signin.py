"""Sign-in from the supervisor ("Open as operator"): the supervisor's admin gives a one-time link, and the worker
hosting the application signs the operator into its admin once, as operator-<username>, for that application on
that environment only, within APP_SIGNIN_MAX_AGE. In-process: the admin as the supervisor, then the link's page
as the worker (tests/test_hosting.py's configuration); tests/test_app_origins_processes.py does it with real
processes."""

import base64
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from apps import cache, signin
from apps.models import Application
from audit.models import Entry
from exchange import contract, redis_client, signing
from exchange.directory import directory
from workers import commands, provisioning
from workers.routing import using

from .factories import create_application, register_environment
from .test_hosting import ENV, start

pytestmark = pytest.mark.django_db(transaction=True)


def link_from_admin(client, app):
    page = client.get(f"/admin/apps/application/{app.pk}/signin/")
    assert page.status_code == 200 and b"operator-" in page.content
    answer = client.post(f"/admin/apps/application/{app.pk}/signin/", {"environment": ENV})
    assert answer.status_code == 302
    return answer["Location"]


def start_existing(app):
    """Start APP (created already) on env_a as the worker agent would."""
    cache.publish(redis_client.supervisor_redis(), Application.objects.with_placements().get(pk=app.pk))
    outcome = commands.start(app.name, ENV, {"admin_username": app.admin_username,
                                             "admin_password_hash": app.admin_password_hash})
    assert outcome["state"] == contract.RUNNING, outcome
    directory.clear()


def as_worker(settings):
    settings.APP_MODE = "worker"
    settings.ENVIRONMENT_NAME = ENV
    settings.ROOT_URLCONF = "workers.urls"
    directory.clear()


def planted(app="crm", environment=ENV, expires=None, signer=signing.SUPERVISOR, **changes):
    claims = {"purpose": contract.SIGNIN_PURPOSE, "app": app, "environment": environment, "operator": "root",
              "superuser": True, "nonce": "n" * 24, "expires": int(time.time()) + 30 if expires is None else expires,
              **changes}
    return base64.urlsafe_b64encode(signing.dumps(claims, signer=signer)).decode().rstrip("=")


def test_the_admin_gives_a_one_time_link_that_signs_the_operator_in_once(admin_client, admin_user, settings, caplog):
    register_environment(ENV)
    crm = create_application("crm", [ENV])
    changelist = admin_client.get("/admin/apps/application/").content.decode()
    assert f'/admin/apps/application/{crm.pk}/signin/?environment={ENV}' in changelist
    link = link_from_admin(admin_client, crm)
    [entry] = Entry.objects.filter(action="application.signin_link")
    assert (entry.actor_kind, entry.actor, entry.target, entry.outcome) == ("user", "admin", "application:crm", "ok")
    parts = urlsplit(link)
    assert parts.path == "/apps/crm/_appsup/signin/" and parse_qs(parts.query)["_env"] == [ENV]

    as_worker(settings)
    start_existing(crm)
    visitor = Client()
    signed_in = visitor.get(link)
    assert signed_in.status_code == 302 and signed_in["Location"] == "/apps/crm/admin/"
    assert signed_in["Referrer-Policy"] == "no-referrer"
    index = visitor.get("/apps/crm/admin/")
    assert index.status_code == 200 and b"operator-admin" in index.content
    with using(provisioning.connect("crm")):
        user = get_user_model().objects.get(username="operator-admin")
        assert user.is_superuser and user.is_staff and not user.has_usable_password()
        entry = LogEntry.objects.get(user=user)
        assert "by operator admin" in entry.change_message

    # Never twice, whoever presents it.
    again = Client().get(link)
    assert again.status_code == 403 and b"used already" in again.content


@pytest.mark.parametrize("token, reason", [
    (lambda: planted(expires=int(time.time()) - 1), b"expired"),
    (lambda: planted(app="erp"), b"another application"),
    (lambda: planted(environment="env_b"), b"another application or environment"),
    (lambda: planted(expires=int(time.time()) + 3600), b"longer than"),
    (lambda: planted(purpose="something-else"), b"not issued by the supervisor"),
    # Claims an environment's key signed (whoever holds a worker's key): valid in every other way, refused.
    (lambda: planted(signer=ENV), b"not issued by the supervisor"),
    (lambda: "%%%", b"not issued by the supervisor"),
])
def test_a_link_is_refused_when_expired_for_another_application_or_environment_or_forged(settings, token, reason):
    as_worker(settings)
    start("crm")
    refused = Client().get("/apps/crm/_appsup/signin/", {"t": token()})
    assert refused.status_code == 403 and reason in refused.content
    with using(provisioning.connect("crm")):
        assert not get_user_model().objects.filter(username__startswith="operator-").exists()


def test_an_operator_who_is_not_a_superuser_becomes_staff_without_permissions(settings):
    as_worker(settings)
    start("crm")
    response = Client().get("/apps/crm/_appsup/signin/", {"t": planted(superuser=False, operator="ann")})
    assert response.status_code == 302
    with using(provisioning.connect("crm")):
        user = get_user_model().objects.get(username="operator-ann")
        assert user.is_staff and not user.is_superuser and not user.user_permissions.exists()


def test_only_staff_with_the_operate_permission_get_a_link(client, settings):
    register_environment(ENV)
    crm = create_application("crm", [ENV])
    staff = get_user_model().objects.create_user("sam", password="sam-pass-123", is_staff=True)
    client.force_login(staff)
    assert client.get(f"/admin/apps/application/{crm.pk}/signin/").status_code == 403
    assert client.post(f"/admin/apps/application/{crm.pk}/signin/", {"environment": ENV}).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_application"),
                               Permission.objects.get(codename="operate_application"))
    staff = get_user_model().objects.get(pk=staff.pk)
    client.force_login(staff)
    location = client.post(f"/admin/apps/application/{crm.pk}/signin/", {"environment": ENV})["Location"]
    assert "/apps/crm/_appsup/signin/?t=" in location
    # An environment the application is not on gives no link.
    other = client.post(f"/admin/apps/application/{crm.pk}/signin/", {"environment": "env_b"})
    assert "_appsup" not in other["Location"]


def test_with_an_origin_per_application_the_link_is_on_the_applications_own_host(admin_client, settings):
    settings.APP_APPS_DOMAIN = "apps.test"
    settings.APP_SUPERVISOR_HOSTS = ("testserver",)
    register_environment(ENV)
    crm = create_application("crm", [ENV])
    assert link_from_admin(admin_client, crm).startswith("http://crm.apps.test/_appsup/signin/?t=")
    assert signin.SIGNIN_PATH == "_appsup/signin/"


def test_the_api_gives_a_link_to_a_person_with_the_operate_permission(client, admin_client, settings):
    from apitokens.models import ApiToken

    settings.SUPERVISOR_API_TOKEN = "b" * 32
    register_environment(ENV)
    register_environment("env_b")
    create_application("crm", [ENV])
    create_application("both", [ENV, "env_b"])

    answer = admin_client.post("/api/apps/crm/signin-link", content_type="application/json")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["url"].startswith("http://testserver/apps/crm/_appsup/signin/?t=")
    assert (body["app"], body["environment"], body["user"], body["expires_in"]) == ("crm", ENV, "operator-admin", 60)

    # Several environments: name one it is on.
    assert admin_client.post("/api/apps/both/signin-link", content_type="application/json").status_code == 400
    assert admin_client.post("/api/apps/both/signin-link", {"environment": "env_b"},
                             content_type="application/json").json()["environment"] == "env_b"
    assert admin_client.post("/api/apps/both/signin-link", {"environment": "env_c"},
                             content_type="application/json").status_code == 400
    assert admin_client.post("/api/apps/nosuch/signin-link", content_type="application/json").status_code == 404

    # The bootstrap token is no person; a per-user token without the operate permission gets nothing.
    bootstrap = client.post("/api/apps/crm/signin-link", content_type="application/json", headers={"Authorization": "Bearer " + "b" * 32})
    assert bootstrap.status_code == 403 and "signs a person in" in bootstrap.json()["error"]
    reader = get_user_model().objects.create_user("reader", is_staff=True)
    reader.user_permissions.add(Permission.objects.get(codename="view_application"))
    api_token = ApiToken(user=reader, name="script")
    secret = api_token.issue()
    api_token.save()
    refused = client.post("/api/apps/crm/signin-link", content_type="application/json", headers={"Authorization": f"Bearer {secret}"})
    assert refused.status_code == 403
