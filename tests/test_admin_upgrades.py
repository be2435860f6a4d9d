"""Fleet upgrades in the admin: the Applications list says which applications need an upgrade; the *Upgrade*
action asks first, listing what would be migrated, then records the upgrade and shows its page, which updates
itself (live.js); it needs apps.operate_application."""

import time

import pytest
from django.urls import reverse

from apps.models import Application
from exchange import contract, signing
from fleet import pending
from fleet.models import Upgrade

from .factories import create_application, register_environment, staff_user
from .pages import changelist_row as row

pytestmark = pytest.mark.django_db
AUTH = "auth.0012_alter_user_first_name_max_length"
CHANGELIST = reverse("admin:apps_application_changelist")


@pytest.fixture(autouse=True)
def apps(controller_running, r):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    create_application("erp", ["env_a"])
    entry = {"app": "crm", "environment": "env_a", "pending": [AUTH], "version": "1.0.0+x", "at": time.time()}
    r.hset(contract.MIGRATIONS_KEY, "crm/env_a", signing.dumps(entry, signer="env_a"))
    pending.mirror(r)


def select(*names, **extra):
    return {"action": "upgrade", "_selected_action": [Application.objects.get(name=n).pk for n in names], **extra}


def test_the_list_says_which_applications_need_an_upgrade(admin_client):
    page = admin_client.get(CHANGELIST)
    assert "upgrade needed</strong> (1 migration)" in row(page, "crm")
    assert "up to date" in row(page, "erp")


def test_the_upgrade_action_asks_first_then_records_the_upgrade_and_shows_its_progress(admin_client):
    asked = admin_client.post(CHANGELIST, select("crm", "erp"))
    assert asked.status_code == 200
    page = asked.content.decode()
    assert f"env_a: {AUTH}" in page and "up to date: nothing to do" in page
    assert not Upgrade.objects.exists()

    done = admin_client.post(CHANGELIST, select("crm", "erp", post="yes"), follow=True)

    upgrade = Upgrade.objects.get()
    assert upgrade.apps == ["crm", "erp"] and upgrade.asked_by == "admin"
    assert list(upgrade.steps.values_list("app", "environment", "state")) == [("crm", "env_a", "waiting")]
    assert done.redirect_chain[-1][0] == reverse("admin:fleet_upgrade_change", args=[upgrade.pk])
    page = done.content.decode()
    assert f'data-live-fragment="upgrade:{upgrade.pk}"' in page and "running" in page
    assert '<script src="/static/live/live.js"></script>' in page


def test_without_the_operate_permission_there_is_no_upgrade_action(client):
    client.force_login(staff_user("editor", "apps.view_application", "apps.change_application"))
    assert '<option value="upgrade">' not in client.get(CHANGELIST).content.decode()
    client.post(CHANGELIST, select("crm", post="yes"))
    assert not Upgrade.objects.exists()
    # Viewing upgrades is viewing applications.
    assert client.get(reverse("admin:fleet_upgrade_changelist")).status_code == 200
