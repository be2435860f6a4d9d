"""The Applications admin's backups (apps.backup_admin): each application's Backups page (list, Back up now,
download, restore behind a confirmation), the permission they need, and the add form's "Start from" a template;
with in-process agents (tests.factories.ThreadAgent) doing the real dumps and loads."""

import sqlite3

import pytest
from django.conf import settings
from django.contrib.auth.hashers import check_password
from django.urls import reverse

from apps import lifecycle
from apps.models import Application, Backup

from .factories import ThreadAgent, create_application, register_environment, staff_user
from .pages import messages_of

# These read a hosted application's SQLite file directly; on PostgreSQL the same backups, restores and clones are
# tested with real processes (test_backup_processes.py).
ON_SQLITE = settings.DATABASES["default"]["ENGINE"].endswith("sqlite3")
SQLITE_ONLY = pytest.mark.skipif(not ON_SQLITE, reason="reads the hosted database as a SQLite file; "
                                 "test_backup_processes.py covers PostgreSQL")
pytestmark = SQLITE_ONLY


@pytest.fixture(autouse=True)
def _controller(controller_running):
    pass


@pytest.fixture(autouse=True)
def _storage(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "backups": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path / "bk")}}}


def backups_url(application):
    return reverse("admin:apps_application_backups", args=[application.pk])


def hosted_users(settings, app):
    with sqlite3.connect(settings.APP_STORAGE_DIR / "apps" / f"{app}.sqlite3") as conn:
        return dict(conn.execute("SELECT username, password FROM auth_user"))


@pytest.mark.django_db(transaction=True)
def test_back_up_now_lists_the_backup_with_its_checksum_and_it_downloads_and_restores(admin_client):
    with ThreadAgent("env_a"):
        application = create_application("crm", ["env_a"])
        assert lifecycle.run(application, "start").ok
        assert "No backups yet." in admin_client.get(backups_url(application)).content.decode()

        done = admin_client.post(backups_url(application), follow=True)
        [(level, text)] = messages_of(done)
        assert level == "success" and "crm backed up on env_a" in text, text
        backup = Backup.objects.get()
        html = done.content.decode()
        assert backup.sha256 in html and str(backup.size) in html
        download = admin_client.get(reverse("admin:apps_application_backup_download", args=[application.pk, backup.pk]))
        assert download.status_code == 200
        assert b"".join(download.streaming_content).startswith(b"SQLite format 3\x00")

        restore_url = reverse("admin:apps_application_backup_restore", args=[application.pk, backup.pk])
        confirm = admin_client.get(restore_url)
        assert f"Restore crm from backup {backup.pk}?" in confirm.content.decode()
        assert Backup.objects.count() == 1  # nothing done before the confirmation
        restored = admin_client.post(restore_url, {"post": "yes"}, follow=True)
    [(level, text)] = messages_of(restored)
    assert level == "success" and f"restored from backup {backup.pk}" in text and "safety backup" in text, text
    assert Backup.objects.filter(kind=Backup.SAFETY).count() == 1
    # The Backups page lists the restore in a live fragment (live.js re-reads it on each step's event).
    page = admin_client.get(reverse("admin:apps_application_backups", args=[application.pk])).content.decode()
    assert 'data-live-fragment="restores:crm"' in page and "live/live.js" in page
    restore = application.restores.get()
    assert f'data-restore="{restore.pk}" data-state="done"' in page


@pytest.mark.django_db
def test_a_user_who_may_only_view_sees_the_backups_but_cannot_take_download_or_restore_one(client):
    register_environment("env_a")
    application = create_application("crm", ["env_a"])
    client.force_login(staff_user("viewer", "apps.view_application"))
    page = client.get(backups_url(application))
    assert page.status_code == 200 and "Back up now" not in page.content.decode()
    assert client.post(backups_url(application)).status_code == 403
    assert client.get(reverse("admin:apps_application_backup_download", args=[application.pk, 1])).status_code == 403
    assert client.post(reverse("admin:apps_application_backup_restore", args=[application.pk, 1]),
                       {"post": "yes"}).status_code == 403


@pytest.mark.django_db(transaction=True)
def test_the_add_form_offers_templates_and_the_new_application_starts_with_the_templates_data(admin_client, settings):
    with ThreadAgent("env_a"):
        template = create_application("tpl", ["env_a"], admin_username="tpladmin")
        assert lifecycle.run(template, "start").ok
        create_application("plain", ["env_a"])
        Application.objects.filter(name="tpl").update(is_template=True)
        add_url = reverse("admin:apps_application_add")
        form = admin_client.get(add_url).content.decode()
        assert f'<option value="{template.pk}">tpl</option>' in form and ">plain</option>" not in form

        response = admin_client.post(add_url, {
            "name": "customer", "display_name": "", "environments": ["env_a"], "admin_username": "owner",
            "admin_password": "an-owner-password-1", "start_from": template.pk}, follow=True)
        assert response.status_code == 200
        assert any("holds tpl's data" in text for _, text in messages_of(response)), messages_of(response)
        customer = Application.objects.get(name="customer")
        assert lifecycle.run(customer, "start").ok
    users = hosted_users(settings, "customer")
    assert set(users) == {"tpladmin", "owner"}  # the template's data, and its own admin account
    assert check_password("an-owner-password-1", users["owner"])
    assert set(hosted_users(settings, "tpl")) == {"tpladmin"}


@pytest.mark.django_db
def test_the_change_form_sets_the_schedule_retention_and_template_and_refuses_a_bad_cron(admin_client, client,
                                                                                         settings):
    register_environment("env_a")
    application = create_application("crm", ["env_a"])
    url = reverse("admin:apps_application_change", args=[application.pk])
    form = {"display_name": "CRM", "environments_0": "env_a"}
    refused = admin_client.post(url, {**form, "backup_schedule": "every night"})
    assert refused.status_code == 200 and "is not a cron expression" in refused.content.decode()
    assert admin_client.post(url, {**form, "backup_schedule": "30 2 * * *", "backup_keep": "3",
                                   "is_template": "on"}).status_code == 302
    application.refresh_from_db()
    assert (application.backup_schedule, application.backup_keep, application.is_template) == ("30 2 * * *", 3, True)

    # A PATCH of the API changes what it names and leaves these as they are.
    settings.SUPERVISOR_API_TOKEN = "s3cret-token-for-backup-tests-0123"
    patched = client.patch(f"/api/apps/{application.name}/", {"display_name": "Customers"},
                           content_type="application/json",
                           headers={"Authorization": "Bearer s3cret-token-for-backup-tests-0123"})
    assert patched.status_code == 200, patched.content
    application.refresh_from_db()
    assert (application.display_name, application.backup_schedule, application.is_template) == (
        "Customers", "30 2 * * *", True)
