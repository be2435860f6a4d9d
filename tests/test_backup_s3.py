"""Backups stored in an S3-compatible bucket (APP_BACKUP_STORAGE=s3, django-storages' S3 backend): moto's server
mode on 127.0.0.1 plays the service, a real process spoken to over HTTP; an in-process agent (ThreadAgent) dumps and
loads. The storage is configured the documented way, from the variables (supervisor_project.config)."""

import subprocess
import sys

import pytest

from apps import backups, lifecycle
from apps.models import Backup
from supervisor_project.config import load

from .conftest import free_port
from .factories import ThreadAgent, create_application
from .processes import SUPERVISOR_KEY, http_ready, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BUCKET = "appsup-backups"


@pytest.fixture
def s3(tmp_path, monkeypatch, settings):
    boto3 = pytest.importorskip("boto3")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=open(tmp_path / "moto.log", "wb"), stderr=subprocess.STDOUT)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_for(http_ready(endpoint), what="moto's S3 server")
        for var, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
            monkeypatch.setenv(var, value)
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        config = load({"APP_MODE": "supervisor", "APP_SUPERVISOR_KEY": SUPERVISOR_KEY, "APP_BACKUP_STORAGE": "s3",
                       "APP_BACKUP_S3_BUCKET": BUCKET, "APP_BACKUP_S3_ENDPOINT_URL": endpoint,
                       "APP_BACKUP_S3_REGION": "us-east-1"})
        settings.STORAGES = {**settings.STORAGES, "backups": config.backup_storage}
        yield client
    finally:
        server.terminate()
        server.wait(10)


def test_a_backup_stored_in_s3_restores_and_one_altered_there_is_refused(s3, controller_running):
    with ThreadAgent("env_a"):
        application = create_application("crm", ["env_a"])
        assert lifecycle.run(application, "start").ok
        backup = backups.take(application)
        key = f"backups/{backup.file}"
        stored = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert len(stored) == backup.size and stored.startswith(backups.MAGIC[backup.engine])

        restored = backups.restore(application, backup)
        assert restored.safety is not None and restored.environments == ["env_a"]

        altered = bytearray(stored)
        altered[-1] ^= 1
        s3.put_object(Bucket=BUCKET, Key=key, Body=bytes(altered))
        with pytest.raises(backups.BackupRefused, match="is damaged"):
            backups.restore(application, backup)
    assert Backup.objects.filter(kind=Backup.SAFETY).count() == 1  # the refused restore took none
