"""The admin's part of the audit log: Django's add, change and delete, our actions and custom views, recorded with
the operator as actor once they ran (a confirmation page is no run); the log itself is read-only in the admin."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse

from apps.models import Application
from audit import actions
from audit import log as audit
from audit.models import Entry
from exchange import redis_client

from .factories import PASSWORD, ThreadAgent, create_application, register_environment, staff_user


@pytest.fixture(autouse=True)
def _controller(controller_running):
    pass


def select(action, *names, **extra):
    pks = [Application.objects.get(name=n).pk for n in names]
    return {"action": action, "_selected_action": pks, **extra}


CHANGELIST = "/admin/apps/application/"


@pytest.mark.django_db
def test_adding_and_changing_an_application_in_the_admin_is_recorded_without_its_password(
        admin_client, django_capture_on_commit_callbacks):
    register_environment("env_a")
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("admin:apps_application_add"), {
            "name": "crm", "display_name": "CRM", "environments_0": "env_a", "environments_1": "",
            "environments_2": "", "environments_3": "", "admin_username": "boss", "admin_password": PASSWORD})
    added = Entry.objects.get()
    assert (added.actor_kind, added.actor, added.action, added.target, added.outcome) == (
        "user", "admin", "application.create", "application:crm", "ok")
    assert PASSWORD not in str(added.parameters)
    assert added.request_id and added.address == "127.0.0.1"


@pytest.mark.django_db(transaction=True)
def test_the_start_action_is_recorded_once_it_ran_not_when_it_asked_for_confirmation(admin_client):
    with ThreadAgent("env_a"):
        create_application("crm", ["env_a"])
        create_application("erp", ["env_a"])

        admin_client.post(CHANGELIST, select("start", "crm", "erp"))  # the confirmation page
        assert not Entry.objects.exists()
        admin_client.post(CHANGELIST, select("start", "crm", "erp", post="yes"))

    entries = list(Entry.objects.order_by("target"))
    assert [(e.actor, e.action, e.target, e.outcome) for e in entries] == [
        ("admin", "application.start", "application:crm", "ok"), ("admin", "application.start", "application:erp", "ok")]
    assert entries[0].parameters["messages"][0].startswith("Started crm on env_a")
    assert entries[0].parameters["history"][0]["what"] == "change"  # Django's history of it, not a second entry


@pytest.mark.django_db(transaction=True)
def test_an_action_that_reports_an_error_is_recorded_failed_with_the_error(admin_client, settings):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    settings.APP_SUPERVISOR_REDIS_URL = settings.APP_COMMAND_REDIS_URL = "redis://127.0.0.1:1/0"
    redis_client.reset()

    admin_client.post(CHANGELIST, select("stop", "crm", post="yes"))

    entry = Entry.objects.get()
    assert (entry.action, entry.target, entry.outcome) == ("application.stop", "application:crm", "failed")
    assert entry.detail.startswith("Could not stop crm: Redis is unavailable")


@pytest.mark.django_db(transaction=True)
def test_the_change_page_buttons_are_recorded_as_their_command(admin_client):
    with ThreadAgent("env_a"):
        app = create_application("crm", ["env_a"])
        url = reverse("admin:apps_application_restart", args=[app.pk])
        admin_client.get(url)
        admin_client.post(url, {"post": "yes"})

    entry = Entry.objects.get()
    assert (entry.actor, entry.action, entry.target, entry.outcome) == (
        "admin", "application.restart", "application:crm", "ok")


@pytest.mark.django_db
def test_granting_a_permission_to_a_user_is_recorded(admin_client):
    intern = staff_user("intern")
    permission = Permission.objects.get(codename="operate_application")
    url = reverse("admin:auth_user_change", args=[intern.pk])

    admin_client.post(url, {"username": "intern", "is_active": "on", "is_staff": "on",
                            "user_permissions": [permission.pk], "date_joined_0": "2026-01-01",
                            "date_joined_1": "00:00:00", "initial-date_joined_0": "2026-01-01",
                            "initial-date_joined_1": "00:00:00"})

    assert get_user_model().objects.get(username="intern").has_perm("apps.operate_application")
    entry = Entry.objects.get()
    assert (entry.actor, entry.action, entry.target) == ("admin", "user.change", "user:intern")
    assert "User permissions" in str(entry.parameters["changed"])


@pytest.mark.django_db
def test_the_log_is_read_only_in_the_admin_even_for_a_superuser(admin_client):
    entry = audit.record(audit.Actor(actions.USER, "alice"), actions.APPLICATION_START, "application:crm")

    listed = admin_client.get(reverse("admin:audit_entry_changelist") + "?q=application:crm")
    assert listed.status_code == 200 and "application.start" in listed.content.decode()
    assert admin_client.get(reverse("admin:audit_entry_add")).status_code == 403
    assert admin_client.post(reverse("admin:audit_entry_delete", args=[entry.pk]), {"post": "yes"}).status_code == 403
    page = admin_client.post(reverse("admin:audit_entry_change", args=[entry.pk]), {"actor": "mallory"})
    assert page.status_code == 403
    assert Entry.objects.get(pk=entry.pk).actor == "alice"


@pytest.mark.django_db
def test_the_log_filters_by_actor_kind_and_outcome(admin_client):
    audit.record(audit.Actor(actions.USER, "alice"), actions.APPLICATION_START, "application:crm")
    audit.record(audit.Actor(actions.CONTROLLER, "host:1"), actions.APPLICATION_STOP, "application:erp",
                 outcome=actions.FAILED)

    page = admin_client.get(reverse("admin:audit_entry_changelist") + "?actor_kind=controller&outcome=failed")

    assert "application:erp" in page.content.decode() and "application:crm" not in page.content.decode()
