"""Each hosted application's own database, on SQLite and (when the run uses it) PostgreSQL."""

import threading
import time

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import connections

from apps import lifecycle
from exchange import contract
from workers import provisioning

from .factories import ThreadAgent, create_application

pytestmark = pytest.mark.django_db(transaction=True)

ON_POSTGRES = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")


@pytest.fixture
def app_name():
    name = "provtest"
    yield name
    provisioning.drop_database(name)


def test_sqlite_database_lives_under_the_storage_directory(settings):
    if ON_POSTGRES:
        pytest.skip("this run uses PostgreSQL")
    assert provisioning.database_settings("crm")["NAME"] == str(settings.APP_STORAGE_DIR / "apps" / "crm.sqlite3")


def test_postgres_database_is_app_name_on_the_same_server():
    if not ON_POSTGRES:
        pytest.skip("PostgreSQL is not configured for this run (set DB_DIALECT=postgres)")
    db = provisioning.database_settings("crm")
    default = settings.DATABASES["default"]
    assert db["NAME"] == provisioning.ALIAS_PREFIX + "crm"  # app_crm (app_gw0_crm in a run split by pytest-xdist)
    assert (db["HOST"], db["PORT"], db["USER"]) == (default["HOST"], default["PORT"], default["USER"])


def test_create_migrate_and_drop(app_name):
    assert not provisioning.database_exists(app_name)
    assert provisioning.create_database(app_name) is True
    provisioning.migrate(app_name)
    assert provisioning.database_exists(app_name)
    tables = connections[provisioning.alias(app_name)].introspection.table_names()
    assert {"auth_user", "django_session", "django_admin_log", "django_content_type"} <= set(tables)
    # This process's own tables stay out of a hosted application's database.
    assert not any(t.startswith(("environments_", "apps_")) for t in tables)

    assert provisioning.create_database(app_name) is False  # idempotent
    provisioning.migrate(app_name)

    provisioning.drop_database(app_name)
    assert not provisioning.database_exists(app_name)


def test_superuser_is_created_once_from_the_hash(app_name):
    provisioning.create_database(app_name)
    provisioning.migrate(app_name)
    assert provisioning.ensure_superuser(app_name, "boss", make_password("pw-1")) is True
    assert provisioning.ensure_superuser(app_name, "boss", make_password("pw-2")) is False
    user = get_user_model().objects.using(provisioning.alias(app_name)).get(username="boss")
    assert user.is_superuser and user.is_staff and user.check_password("pw-1")


def test_two_workers_starting_the_same_app_never_migrate_at_once(monkeypatch):
    """env_a and env_b receive start at the same moment; the provisioning lock serialises their migrations."""
    real_migrate = provisioning.migrate
    active, overlaps, calls = [], [], []
    guard = threading.Lock()

    def observed_migrate(app):
        with guard:
            active.append(app)
            if len(active) > 1:
                overlaps.append(list(active))
        calls.append(app)
        time.sleep(0.3)  # widen the window a race would need
        real_migrate(app)
        with guard:
            active.remove(app)

    monkeypatch.setattr(provisioning, "migrate", observed_migrate)
    from exchange import channel

    with ThreadAgent("env_a"), ThreadAgent("env_b"):
        app = create_application("shared", ["env_a", "env_b"])
        lifecycle.cache.publish(lifecycle.supervisor_redis(), app)
        ids = {env: channel.enqueue(env, contract.START, "shared", {}) for env in ("env_a", "env_b")}
        for env, job_id in ids.items():
            answer = lifecycle._wait(job_id, env, time.monotonic() + 60, time.monotonic, command=contract.START,
                                     app="shared")
            assert answer["state"] == contract.RUNNING
    assert calls == ["shared", "shared"]
    assert overlaps == []
    provisioning.drop_database("shared")
