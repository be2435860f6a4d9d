"""The JSON API's backups, restores and clones (apps.backup_api, apps.clones): answers, refusals and permissions,
with in-process agents (tests.factories.ThreadAgent) doing the real dumps and loads on SQLite."""

import hashlib
import json
import sqlite3
import time

import pytest
from django.conf import settings
from django.contrib.auth.hashers import check_password
from django.core.files.base import ContentFile

from apps import backups, lifecycle
from apps.models import BACKUP_PERMISSION, Application, Backup, Restore
from exchange import contract

from .factories import PASSWORD, ThreadAgent, create_application, register_environment, staff_user

# These read a hosted application's SQLite file directly; on PostgreSQL the same backups, restores and clones are
# tested with real processes (test_backup_processes.py).
ON_SQLITE = settings.DATABASES["default"]["ENGINE"].endswith("sqlite3")
SQLITE_ONLY = pytest.mark.skipif(not ON_SQLITE, reason="reads the hosted database as a SQLite file; "
                                 "test_backup_processes.py covers PostgreSQL")
pytestmark = [pytest.mark.django_db(transaction=True), SQLITE_ONLY]

TOKEN = "s3cret-token-for-backup-tests-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(autouse=True)
def _setup(settings, tmp_path, controller_running):
    settings.SUPERVISOR_API_TOKEN = TOKEN
    settings.STORAGES = {**settings.STORAGES, "backups": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path / "bk")}}}


def post(client, path, data=None, **headers):
    return client.post(path, data if data is not None else {}, content_type="application/json",
                       headers=headers or AUTH)


def users(settings, app):
    with sqlite3.connect(settings.APP_STORAGE_DIR / "apps" / f"{app}.sqlite3") as conn:
        return dict(conn.execute("SELECT username, password FROM auth_user"))


def test_a_backup_is_answered_listed_downloaded_and_restored(client):
    with ThreadAgent("env_a"):
        application = create_application("crm", ["env_a"])
        assert lifecycle.run(application, "start").ok
        taken = post(client, "/api/apps/crm/backups")
        assert taken.status_code == 201, taken.content
        body = taken.json()
        assert set(body) == {"id", "app", "environment", "engine", "kind", "size", "sha256", "created_at",
                             "download"}
        assert (body["app"], body["environment"], body["engine"], body["kind"]) == ("crm", "env_a", "sqlite",
                                                                                     "manual")
        assert taken["Location"] == body["download"] == f"/api/apps/crm/backups/{body['id']}"
        assert client.get("/api/apps/crm/backups", headers=AUTH).json() == {"backups": [body], "restores": []}
        download = client.get(body["download"], headers=AUTH)
        content = b"".join(download.streaming_content)
        assert len(content) == body["size"]

        restored = post(client, "/api/apps/crm/restore", {"backup": body["id"]})
        assert restored.status_code == 200, restored.content
        answer = restored.json()
        assert answer["restore"]["backup"] == body["id"] and answer["restore"]["environments"] == ["env_a"]
        assert Backup.objects.get(pk=answer["restore"]["safety_backup"]).kind == Backup.SAFETY
        assert answer["app"]["statuses"]["env_a"]["state"] == "running"


def test_a_restore_shows_each_step_while_it_runs_and_announces_each_change(client, r):
    with ThreadAgent("env_a"):
        application = create_application("crm", ["env_a"])
        assert lifecycle.run(application, "start").ok
        backup = backups.take(application)
        pubsub = r.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(contract.EVENTS_CHANNEL)
        shown = []

        def look(step):  # what a page or an API client reads at that moment
            shown.append(client.get("/api/apps/crm/backups", headers=AUTH).json()["restores"][0])

        restored = backups.restore(application, backup, progress=look)

    assert [(s["state"], s["step"]) for s in shown] == [
        ("active", "safety backup"), ("active", "stop"), ("active", "load"), ("active", "start")]
    assert shown[-1]["safety_backup"] == restored.safety.pk and shown[-1]["finished_at"] is None
    final = client.get("/api/apps/crm/backups", headers=AUTH).json()["restores"]
    assert len(final) == 1 and final[0]["id"] == restored.record.pk
    assert (final[0]["state"], final[0]["step"], final[0]["error"]) == ("done", "start", None)
    assert final[0]["backup"] == backup.pk and final[0]["environments"] == ["env_a"] and final[0]["finished_at"]
    announced, deadline = [], time.monotonic() + 1
    while time.monotonic() < deadline:  # (get_message answers None for the subscription's own confirmation)
        message = pubsub.get_message(timeout=0.1)
        if message is not None:
            announced.append(json.loads(message["data"]))
    assert sum(1 for e in announced if e == {"type": "app", "name": "crm"}) >= 5, announced  # each step, the end


def test_a_restore_that_fails_after_it_began_is_shown_failed_with_its_error(client):
    with ThreadAgent("env_a"):
        application = create_application("crm", ["env_a"])
        assert lifecycle.run(application, "start").ok
        data = b"PGDMP" + b"\0" * 100  # passes its own checks; crm's database is SQLite, as its safety backup shows
        name = backups.storage().save("crm/other.pgdump", ContentFile(data))
        other = Backup.objects.create(application=application, environment="env_a", engine="postgresql", file=name,
                                      size=len(data), sha256=hashlib.sha256(data).hexdigest())
        refused = post(client, "/api/apps/crm/restore", {"backup": other.pk})
        assert refused.status_code == 409 and "nothing was restored" in refused.json()["error"]

    [shown] = client.get("/api/apps/crm/backups", headers=AUTH).json()["restores"]
    assert (shown["state"], shown["step"]) == ("failed", "safety backup")
    assert "nothing was restored" in shown["error"] and shown["safety_backup"] is not None


def test_a_restore_left_active_by_a_killed_process_is_shown_cut_off_by_the_next(client):
    with ThreadAgent("env_a"):
        application = create_application("crm", ["env_a"])
        assert lifecycle.run(application, "start").ok
        backup = backups.take(application)
        Restore.objects.create(application=application, backup=backup, environments=["env_a"], step="load")
        assert post(client, "/api/apps/crm/restore", {"backup": backup.pk}).status_code == 200

    last, cut_off = client.get("/api/apps/crm/backups", headers=AUTH).json()["restores"]
    assert last["state"] == "done"
    assert (cut_off["state"], cut_off["step"]) == ("failed", "load") and cut_off["error"].startswith("cut off")


def test_a_restore_body_that_is_not_valid_is_refused_naming_the_field(client):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    bad = post(client, "/api/apps/crm/restore", {"backup": "7", "extra": 1})
    assert bad.status_code == 400 and set(bad.json()["errors"]) == {"backup", "extra"}
    assert post(client, "/api/apps/crm/restore", {"backup": 99}).status_code == 404
    assert client.get("/api/apps/crm/backups/99", headers=AUTH).status_code == 404
    assert client.get("/api/apps/crm/backups/nope", headers=AUTH).status_code == 404
    assert post(client, "/api/apps/nope/backups").status_code == 404


def test_a_backup_of_an_application_with_no_environment_online_is_refused_and_none_is_listed(client):
    register_environment("env_a", heartbeat_at=0)
    create_application("crm", ["env_a"])
    refused = post(client, "/api/apps/crm/backups")
    assert refused.status_code == 409 and "env_a" in refused.json()["error"]
    assert client.get("/api/apps/crm/backups", headers=AUTH).json() == {"backups": [], "restores": []}


def test_taking_restoring_downloading_and_cloning_need_the_backup_permission(client):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    client.force_login(staff_user("ops", "apps.view_application", "apps.add_application"))
    assert client.get("/api/apps/crm/backups").status_code == 200
    for path, data in (("/api/apps/crm/backups", {}), ("/api/apps/crm/restore", {"backup": 1})):
        refused = client.post(path, data, content_type="application/json")
        assert refused.status_code == 403 and refused.json()["permission"] == BACKUP_PERMISSION
    assert client.get("/api/apps/crm/backups/1").status_code == 403
    clone = client.post("/api/apps/", {"name": "erp", "environments": ["env_a"], "admin_username": "a",
                                       "admin_password": PASSWORD, "clone_of": "crm"},
                        content_type="application/json")
    assert clone.status_code == 403 and clone.json()["permission"] == BACKUP_PERMISSION
    assert not Application.objects.filter(name="erp").exists()


def test_a_clone_gets_the_data_and_its_own_admin_account_and_a_bad_source_is_refused(client, settings):
    with ThreadAgent("env_a"):
        source = create_application("crm", ["env_a"], admin_username="boss")
        assert lifecycle.run(source, "start").ok
        cloned = post(client, "/api/apps/", {"name": "erp", "environments": ["env_a"], "admin_username": "boss",
                                            "admin_password": "the-clone-password-1", "clone_of": "crm"})
        assert cloned.status_code == 201, cloned.content
        assert cloned.json()["desired_state"] == "stopped"
        assert lifecycle.run(Application.objects.get(name="erp"), "start").ok
        for body, field in (({"clone_of": "nope"}, "clone_of"), ({"from_backup": 999}, "from_backup"),
                            ({"from_backup": "1"}, "from_backup"), ({"clone_of": "crm", "from_backup": 1}, "__all__")):
            refused = post(client, "/api/apps/", {"name": "other", "environments": ["env_a"], "admin_username": "a",
                                                  "admin_password": PASSWORD, **body})
            assert refused.status_code == 400 and field in refused.json()["errors"], refused.content
    # "boss" of the clone has the clone's password, not the source's; the source's is unchanged.
    assert check_password("the-clone-password-1", users(settings, "erp")["boss"])
    assert check_password(PASSWORD, users(settings, "crm")["boss"])
    assert not Application.objects.filter(name="other").exists()
