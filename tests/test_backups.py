"""apps.backups without workers: the schedule's slots claimed once whichever controller looks (a failure alerted once
per slot), retention, and the checks a restore makes of the stored bytes before it does anything; with the real
test Redis and database and a clock. Backups taken and restored by real agents: tests/test_backup_processes.py."""

import hashlib
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from alerts.models import BACKUP_FAILED, Alert, Delivery
from apps import backups
from apps.models import Application, Backup, BackupSlot, Restore
from controller.loop import Controller
from exchange import contract
from exchange.redis_client import command_redis

from .factories import create_application, register_environment

pytestmark = pytest.mark.django_db(transaction=True)

HOOK = "http://alerts.test/hook"
SQLITE_HEAD = b"SQLite format 3\x00"


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture(autouse=True)
def _storage(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "backups": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path / "bk")}}}
    settings.APP_ALERT_WEBHOOKS = (HOOK,)


def transfers_left():
    return list(command_redis().scan_iter(contract.transfer_key("*")))


def offline_app(name="crm"):
    """An application whose only environment stopped heartbeating long ago: a backup of it cannot be taken."""
    register_environment("env_a", heartbeat_at=time.time() - 3600)
    application = create_application(name, ["env_a"])
    Application.objects.filter(pk=application.pk).update(created_at=timezone.now() - timedelta(days=1))
    return Application.objects.get(pk=application.pk)


def test_a_slot_is_claimed_once_whichever_of_two_controllers_looks_and_its_failure_is_alerted_once(settings):
    settings.APP_BACKUP_SCHEDULE = "0 * * * *"
    application = offline_app()
    clock = Clock(time.time())
    first, second = Controller(clock=clock, holder="one"), Controller(clock=clock, holder="two")

    assert first.backup_one() is True
    assert second.backup_one() is False
    assert first.backup_one() is False
    slots = list(BackupSlot.objects.filter(application=application))
    assert len(slots) == 1 and slots[0].claimed_by == "one" and slots[0].backup is None
    assert "none of its environments (env_a) is online" in slots[0].error
    alerts = list(Alert.objects.filter(event=BACKUP_FAILED))
    assert len(alerts) == 1 and alerts[0].app == "crm" and "scheduled backup of crm" in alerts[0].message
    assert Delivery.objects.filter(alert=alerts[0], target=HOOK).count() == 1
    assert Backup.objects.count() == 0

    clock.now += 3600  # the next slot: claimed by whichever looks first
    assert second.backup_one() is True
    assert first.backup_one() is False
    assert BackupSlot.objects.filter(application=application).count() == 2
    assert Alert.objects.filter(event=BACKUP_FAILED).count() == 2


def test_no_schedule_an_application_turned_off_or_created_after_the_slot_takes_nothing(settings):
    application = offline_app()
    controller = Controller(clock=Clock(time.time()), holder="one")
    settings.APP_BACKUP_SCHEDULE = ""
    assert controller.backup_one() is False
    settings.APP_BACKUP_SCHEDULE = "0 * * * *"
    Application.objects.filter(pk=application.pk).update(backup_schedule="off")
    assert controller.backup_one() is False
    Application.objects.filter(pk=application.pk).update(backup_schedule="", created_at=timezone.now())
    assert controller.backup_one() is False  # its latest slot came before it existed
    # Its own schedule, with none for the others.
    settings.APP_BACKUP_SCHEDULE = ""
    Application.objects.filter(pk=application.pk).update(backup_schedule="* * * * *",
                                                         created_at=timezone.now() - timedelta(hours=1))
    assert controller.backup_one() is True
    assert BackupSlot.objects.count() == 1


def stored_backup(application, data, engine="sqlite", created_at=None, sha256=None):
    name = backups.storage().save(f"{application.name}/b.{engine}", _content(data))
    return Backup.objects.create(application=application, environment="env_a", engine=engine, file=name,
                                 size=len(data), sha256=sha256 or hashlib.sha256(data).hexdigest(),
                                 created_at=created_at or timezone.now())


def _content(data):
    from django.core.files.base import ContentFile

    return ContentFile(data)


def test_a_backup_altered_by_one_byte_is_refused_before_anything_is_done():
    application = offline_app()
    data = SQLITE_HEAD + b"x" * 4096
    backup = stored_backup(application, data)
    path = backups.storage().path(backup.file)
    altered = bytearray(data)
    altered[100] ^= 1
    with open(path, "wb") as f:
        f.write(altered)
    with pytest.raises(backups.BackupRefused) as refused:
        backups.restore(application, backup)
    assert refused.value.status == 409
    assert f"backup {backup.pk} of crm is damaged" in str(refused.value) and "nothing was restored" in str(refused.value)
    assert not transfers_left()  # the bytes pushed while they were checked are gone with the refusal


def test_a_backup_that_is_not_a_dump_of_its_engine_is_refused():
    application = offline_app()
    not_a_dump = stored_backup(application, b"hello, this is not a database")
    with pytest.raises(backups.BackupRefused, match="not a sqlite database dump"):
        backups.restore(application, not_a_dump)
    other_engine = stored_backup(application, b"PGDMP" + b"\0" * 100)
    with pytest.raises(backups.BackupRefused, match="a postgresql dump, not a sqlite one"):
        backups.restore(application, other_engine)
    assert not Restore.objects.exists()  # refused before anything: no restore to show
    assert not transfers_left()


def test_another_applications_backup_is_refused_pointing_at_clones():
    application = offline_app()
    other = create_application("other", ["env_a"])
    backup = stored_backup(other, SQLITE_HEAD)
    with pytest.raises(backups.BackupRefused, match="create one with from_backup") as refused:
        backups.restore(application, backup)
    assert refused.value.status == 400


def test_retention_keeps_the_newest_and_deletes_the_files_of_the_others(settings):
    settings.APP_BACKUP_KEEP = 2
    application = offline_app()
    now = timezone.now()
    made = [stored_backup(application, SQLITE_HEAD + bytes([n]), created_at=now - timedelta(hours=n)) for n in range(3)]
    assert backups.prune(application) == 1
    assert list(Backup.objects.order_by("-created_at")) == made[:2]
    assert not backups.storage().exists(made[2].file)
    application.backup_keep = 1
    application.save()
    assert backups.prune(application) == 1
    assert list(Backup.objects.all()) == made[:1]


def test_a_single_instance_refuses_backups_saying_what_to_back_up_instead(settings):
    application = offline_app()
    settings.APP_MODE = ""
    with pytest.raises(backups.BackupRefused, match="single instance"):
        backups.take(application)


def test_the_scratch_of_a_backup_cut_off_an_hour_ago_is_deleted_every_ten_minutes_and_nothing_else(settings):
    location = Path(settings.STORAGES["backups"]["OPTIONS"]["location"])
    hour_ago = time.time() - 3600

    def scratch(name, mtime):
        path = location / name
        path.mkdir(parents=True)
        (path / "dump").write_bytes(SQLITE_HEAD)
        os.utime(path, (mtime, mtime))
        return path

    cut_off = scratch(".scratch-crm-old1", hour_ago - 5)
    under_way = scratch(".scratch-crm-new1", time.time())  # perhaps a backup another process is taking now
    stored = location / "crm" / "crm-20260101T000000-abcd.sqlite3"
    stored.parent.mkdir()
    stored.write_bytes(SQLITE_HEAD)
    os.utime(stored.parent, (hour_ago - 5, hour_ago - 5))
    clock = Clock(time.time())
    controller = Controller(clock=clock, holder="one")
    controller.backup_one()
    assert not cut_off.exists()
    assert under_way.exists() and stored.exists()

    later = scratch(".scratch-crm-old2", hour_ago - 5)
    clock.now += 599
    controller.backup_one()
    assert later.exists()  # looked for every ten minutes, not every pass
    clock.now += 1
    controller.backup_one()
    assert not later.exists()
