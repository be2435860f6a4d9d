"""Fleet upgrades (fleet.upgrades, fleet.pending, workers.upgrade): what agents report is mirrored (and what is
forged is not), an upgrade migrates what is pending in the background with a bound per environment, a failing
migration leaves its application stopped with the error while the others go on, APP_AUTO_UPGRADE migrates once per
version. Real Redis, real database, a real agent in a thread (tests.factories.ThreadAgent)."""

import datetime
import time

import pytest
from django.core.management import call_command
from django.db import connections
from django.utils import timezone
from rq.results import Result

from apps import lifecycle
from apps.models import Application, Backup
from controller.loop import Controller
from exchange import contract, signing
from exchange.redis_client import command_redis
from fleet import pending, upgrades
from fleet.models import DONE, FAILED, MIGRATING, WAITING, PendingMigrations, Upgrade, UpgradeStep
from workers import provisioning
from workers import upgrade as worker_upgrade

from .factories import ThreadAgent, create_application, register_environment

AUTH = "auth.0012_alter_user_first_name_max_length"


def report(r, app, environment, migrations, version="1.0.0+abc", field=None):
    """An agent's report, as the agent signs it."""
    entry = {"app": app, "environment": environment, "pending": migrations, "version": version, "at": time.time()}
    r.hset(contract.MIGRATIONS_KEY, field or contract.status_field(app, environment), signing.dumps(entry, signer=environment))


def until_finished(controller, upgrade, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        controller.mirror_migrations()
        controller.upgrade_step()
        upgrade.refresh_from_db()
        if upgrade.state != "running":
            return upgrade
        time.sleep(0.1)
    raise AssertionError(f"upgrade {upgrade.pk} still running: {upgrades.upgrade_dict(upgrade)}")


def started(name, environment="env_a"):
    application = create_application(name, [environment])
    assert lifecycle.run(application, contract.START).ok
    return application


# -- what agents report -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_reports_are_mirrored_and_forged_or_misplaced_ones_are_skipped(r):
    report(r, "crm", "env_a", [AUTH])
    report(r, "erp", "env_a", [AUTH], field="crm/env_b")  # signed, but stored where it does not belong
    r.hset(contract.MIGRATIONS_KEY, "wiki/env_a", b'{"app": "wiki", "environment": "env_a", "pending": ["x.1"]}')
    # env_b's key speaking for env_a: whoever holds one worker's key cannot make another's applications look behind
    r.hset(contract.MIGRATIONS_KEY, "blog/env_a", signing.dumps(
        {"app": "blog", "environment": "env_a", "pending": ["x.1"], "version": "1", "at": time.time()}, signer="env_b"))

    assert pending.mirror(r) == {"crm"}
    assert list(PendingMigrations.objects.values_list("app", "environment", "migrations", "count")) == [
        ("crm", "env_a", [AUTH], 1)]

    report(r, "crm", "env_a", [])
    assert pending.mirror(r) == {"crm"}
    assert PendingMigrations.objects.get().count == 0
    assert pending.mirror(r) == set()  # nothing changed, nothing written

    r.hdel(contract.MIGRATIONS_KEY, "crm/env_a")
    r.hset(contract.MIGRATIONS_KEY, "wiki/env_a", b"junk")
    assert pending.mirror(r) == {"crm"}
    assert not PendingMigrations.objects.exists()


@pytest.mark.django_db
def test_a_redis_emptied_keeps_the_last_known_reports_until_the_agents_report_again(r):
    report(r, "crm", "env_a", [AUTH])
    pending.mirror(r)
    r.flushdb()
    assert pending.mirror(r) == set()
    assert PendingMigrations.objects.get().migrations == [AUTH]


def test_the_code_version_changes_with_the_hosted_code():
    from .hosted_code import hosting

    plain = worker_upgrade.code_version()
    with hosting():
        with_notes = worker_upgrade.code_version()
        assert ("notes", "0001_initial") in worker_upgrade.migration_order()
    assert plain.startswith(contract.VERSION + "+") and with_notes.startswith(contract.VERSION + "+")
    assert plain != with_notes
    assert worker_upgrade.code_version() == plain


# -- upgrades with a real agent ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_missing_migration_is_reported_shown_by_the_api_and_migrated_by_one_upgrade(client, settings):
    settings.SUPERVISOR_API_TOKEN = "t" * 32
    headers = {"Authorization": "Bearer " + "t" * 32}
    controller = Controller()
    with ThreadAgent("env_a"):
        started("fup_a")
        started("fup_b")
        controller.mirror_migrations()
        assert client.get("/api/apps/fup_a/", headers=headers).json()["pending_migrations"] == {"env_a": []}
        for app in ("fup_a", "fup_b"):  # as a worker whose new code brings this migration sees them
            call_command("migrate", "auth", "0011", database=provisioning.connect(app), verbosity=0)
            assert worker_upgrade.report(app, "env_a") == [AUTH]
        controller.mirror_migrations()
        assert client.get("/api/apps/fup_a/", headers=headers).json()["pending_migrations"] == {"env_a": [AUTH]}

        asked = client.post("/api/upgrade", {}, content_type="application/json", headers=headers)
        assert asked.status_code == 202, asked.content
        assert asked["Location"] == f"/api/upgrades/{asked.json()['id']}"
        assert asked.json()["state"] == "running" and asked.json()["total"] == 2
        upgrade = until_finished(controller, Upgrade.objects.get(pk=asked.json()["id"]))

    shown = client.get(f"/api/upgrades/{upgrade.pk}", headers=headers).json()
    assert shown["state"] == "done" and shown["done"] == 2 and shown["failed"] == 0
    assert [s["applied"] for s in shown["steps"]] == [[AUTH], [AUTH]]
    controller.mirror_migrations()
    assert client.get("/api/apps/fup_b/", headers=headers).json()["pending_migrations"] == {"env_a": []}
    assert Application.objects.get(name="fup_a").desired_state == contract.RUNNING
    assert client.get("/api/upgrades/999", headers=headers).status_code == 404
    assert client.get("/api/upgrades/x", headers=headers).status_code == 404


@pytest.mark.django_db(transaction=True)
def test_a_failing_migration_leaves_its_application_stopped_with_the_error_and_the_others_go_on():
    controller = Controller()
    with ThreadAgent("env_a"):
        started("fup_ok")
        started("fup_bad")
        call_command("migrate", "auth", "0011", database=provisioning.connect("fup_ok"), verbosity=0)
        # Recorded as not applied while its table is there: migrating it again fails.
        with connections[provisioning.connect("fup_bad")].cursor() as cursor:
            cursor.execute("DELETE FROM django_migrations WHERE app = 'sessions'")
        for app in ("fup_ok", "fup_bad"):
            worker_upgrade.report(app, "env_a")
        controller.mirror_migrations()
        upgrade = until_finished(controller, upgrades.create(None, asked_by="test"))

    controller.mirror()  # the reported states, as the controller's pass mirrors them
    steps = {s.app: s for s in upgrade.steps.all()}
    assert upgrade.state == FAILED
    assert steps["fup_ok"].state == DONE and steps["fup_ok"].applied == [AUTH]
    assert steps["fup_bad"].state == FAILED and "upgrade failed" in steps["fup_bad"].error
    # Each migrated after a safety backup of its own, which the failure names: what to restore.
    for app, step in steps.items():
        backup = Backup.objects.get(pk=int(step.backup))
        assert (backup.application.name, backup.environment, backup.kind) == (app, "env_a", Backup.SAFETY)
    assert f"(the backup taken before it: backup {steps['fup_bad'].backup})" in steps["fup_bad"].error
    bad = Application.objects.get(name="fup_bad")
    assert bad.desired_state == contract.STOPPED  # the controller does not start it again behind the operator
    placement = bad.placements.get()
    assert placement.state == contract.STOPPED and "upgrade failed" in placement.error
    assert Application.objects.get(name="fup_ok").desired_state == contract.RUNNING


@pytest.mark.django_db(transaction=True)
def test_the_controller_leaves_an_application_being_migrated_alone_even_once_its_migration_stopped_it():
    controller = Controller()
    with ThreadAgent("env_a"):
        started("fup_bad")
        with connections[provisioning.connect("fup_bad")].cursor() as cursor:
            cursor.execute("DELETE FROM django_migrations WHERE app = 'sessions'")
        worker_upgrade.report("fup_bad", "env_a")
        controller.mirror_migrations()
        upgrade = upgrades.create(None, asked_by="test")
        upgrades.advance()  # sent; the agent stops it there and answers
        step = upgrade.steps.get()
        # The answer in Redis: the agent is done with the database (SQLite's shared test database would refuse
        # this thread's writes while the agent's thread writes).
        wait_until = time.monotonic() + 30
        while not command_redis().xrange(Result.get_key(step.job_id)) and time.monotonic() < wait_until:
            time.sleep(0.05)
        controller.mirror()
        assert Application.objects.get(name="fup_bad").placements.get().state == contract.STOPPED
        # Stopped there, desired still running, the answer not read yet: not the controller's to start again.
        assert Application.objects.get(name="fup_bad").desired_state == contract.RUNNING
        assert step.app not in [a.name for a in controller.candidates(controller.now())]
        assert not controller.reconcile_one()
        until_finished(controller, upgrade)
    bad = Application.objects.get(name="fup_bad")
    assert bad.desired_state == contract.STOPPED and "upgrade failed" in bad.placements.get().error


@pytest.mark.django_db(transaction=True)
def test_a_step_whose_backup_fails_is_not_migrated(settings, tmp_path):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    settings.STORAGES = {**settings.STORAGES, "backups": {"BACKEND": "django.core.files.storage.FileSystemStorage",
                                                          "OPTIONS": {"location": str(blocked / "backups")}}}
    controller = Controller()
    with ThreadAgent("env_a"):
        started("fup_a")
        call_command("migrate", "auth", "0011", database=provisioning.connect("fup_a"), verbosity=0)
        worker_upgrade.report("fup_a", "env_a")
        controller.mirror_migrations()
        upgrade = until_finished(controller, upgrades.create(None, asked_by="test"))
        assert worker_upgrade.pending("fup_a") == [AUTH]  # its database as it was

    step = upgrade.steps.get()
    assert (upgrade.state, step.state, step.backup) == (FAILED, FAILED, "")
    assert step.error.startswith("the backup before the upgrade failed, so it was not migrated")
    assert not Backup.objects.exists()
    assert Application.objects.get(name="fup_a").desired_state == contract.RUNNING  # not stopped: untouched


# -- the bound, offline environments, automatic upgrades ------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_at_most_the_configured_number_migrate_at_once_on_one_environment(r, settings):
    settings.APP_UPGRADE_CONCURRENCY = 2
    settings.APP_UPGRADE_BACKUP = False  # no agent here to take them
    register_environment("env_a")
    register_environment("env_b")
    names = {"one": "env_a", "two": "env_a", "three": "env_a", "four": "env_b"}
    for name, environment in names.items():
        create_application(name, [environment])
        report(r, name, environment, [AUTH])
    pending.mirror(r)
    upgrade = upgrades.create(None)

    upgrades.advance()

    # Steps go in order of name: two of env_a's, and env_b's side by side.
    states = dict(UpgradeStep.objects.values_list("app", "state"))
    assert states == {"four": MIGRATING, "one": MIGRATING, "three": MIGRATING, "two": WAITING}
    upgrades.advance()
    assert list(UpgradeStep.objects.filter(environment="env_a").values_list("state", flat=True)).count(MIGRATING) == 2
    assert upgrade.steps.filter(state=MIGRATING).exclude(job_id="").count() == 3


@pytest.mark.django_db
def test_a_step_on_an_offline_environment_fails_at_once_saying_so(r):
    register_environment("env_a", heartbeat_at=0)
    create_application("crm", ["env_a"])
    report(r, "crm", "env_a", [AUTH])
    pending.mirror(r)
    upgrade = upgrades.create(["crm"])

    assert upgrades.advance()

    upgrade.refresh_from_db()
    step = upgrade.steps.get()
    assert (upgrade.state, step.state) == (FAILED, FAILED)
    assert step.error.startswith("not migrated:") and "env_a" in step.error


@pytest.mark.django_db
def test_an_upgrade_of_unknown_applications_is_refused_and_one_with_nothing_pending_is_done_at_once(client, settings):
    settings.SUPERVISOR_API_TOKEN = "t" * 32
    headers = {"Authorization": "Bearer " + "t" * 32}
    register_environment("env_a")
    create_application("crm", ["env_a"])

    refused = client.post("/api/upgrade", {"apps": ["crm", "nosuch"]}, content_type="application/json",
                          headers=headers)
    assert refused.status_code == 400 and "nosuch" in refused.json()["errors"]["apps"][0]
    bad = client.post("/api/upgrade", {"apps": "crm", "x": 1}, content_type="application/json", headers=headers)
    assert bad.status_code == 400 and set(bad.json()["errors"]) == {"apps", "x"}
    done = client.post("/api/upgrade", {"apps": ["crm"]}, content_type="application/json", headers=headers)
    assert done.status_code == 202 and done.json()["state"] == "done" and done.json()["total"] == 0
    assert not Upgrade.objects.filter(state="running").exists()


@pytest.mark.django_db
def test_auto_upgrade_migrates_what_a_worker_with_new_code_reports_once_per_version(r, settings):
    settings.APP_AUTO_UPGRADE = True
    register_environment("env_a", heartbeat_at=0)  # offline: the steps fail at once, which is enough here
    application = create_application("crm", ["env_a"])
    application.placements.update(state=contract.RUNNING)
    Application.objects.filter(pk=application.pk).update(desired_state=contract.RUNNING)
    report(r, "crm", "env_a", [AUTH], version="1.0.0+new")
    controller = Controller()

    controller.upgrade_step()
    controller.upgrade_step()

    automatic = Upgrade.objects.get()
    assert automatic.automatic and automatic.asked_by == "APP_AUTO_UPGRADE"
    assert automatic.steps.get().version == "1.0.0+new"
    report(r, "crm", "env_a", [AUTH], version="1.0.0+newer")
    controller.mirror_migrations()  # the next mirror, when due
    controller.upgrade_step()
    assert Upgrade.objects.count() == 2


@pytest.mark.django_db
def test_without_auto_upgrade_nothing_is_migrated_unasked(r):
    register_environment("env_a")
    application = create_application("crm", ["env_a"])
    application.placements.update(state=contract.RUNNING)
    report(r, "crm", "env_a", [AUTH])
    Controller().upgrade_step()
    assert not Upgrade.objects.exists()


@pytest.mark.django_db
def test_a_step_cut_off_while_taking_its_backup_is_failed_so_that_its_upgrade_ends(r):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    report(r, "crm", "env_a", [AUTH])
    pending.mirror(r)
    upgrade = upgrades.create(["crm"])
    long_ago = timezone.now() - datetime.timedelta(seconds=upgrades.CUT_OFF_SECONDS + 1)
    upgrade.steps.update(state="backing_up", started_at=long_ago)  # claimed by a process killed since

    upgrades.advance()

    upgrade.refresh_from_db()
    assert upgrade.state == FAILED and upgrade.steps.get().error.startswith("cut off")
