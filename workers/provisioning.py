"""Each hosted application's own database: where it lives, creating it, migrating it, its first superuser.

PostgreSQL: database ``app_<name>`` on this worker's server. SQLite: ``APP_STORAGE_DIR/apps/<name>.sqlite3``.
"""

import copy
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.db import connections

# Django apps whose tables each hosted application gets, besides those listed in APP_HOSTED_APPS.
BASE_HOSTED_LABELS = ("contenttypes", "auth", "sessions", "admin")
ALIAS_PREFIX = "app_"


def hosted_labels():
    from django.apps import apps as registry

    extra = [registry.get_app_config(path.rsplit(".", 1)[-1]).label for path in settings.APP_HOSTED_APPS]
    return set(BASE_HOSTED_LABELS) | set(extra)


def alias(app):
    """The connection alias, which is also the PostgreSQL database name."""
    return f"{ALIAS_PREFIX}{app}"


def is_hosted_alias(db):
    return db.startswith(ALIAS_PREFIX)


def _is_postgres():
    return settings.DATABASES["default"]["ENGINE"].endswith("postgresql")


def sqlite_path(app):
    return Path(settings.APP_STORAGE_DIR) / "apps" / f"{app}.sqlite3"


def database_settings(app):
    base = copy.deepcopy(settings.DATABASES["default"])
    base.pop("TEST", None)
    if _is_postgres():
        base["NAME"] = alias(app)
    else:
        base = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(sqlite_path(app))}
    return base


def connect(app):
    """Make the application's database reachable as ``connections[alias(app)]``; returns the alias."""
    name = alias(app)
    if name not in connections.settings:
        connections.settings[name] = database_settings(app)
        connections.configure_settings(connections.settings)
    return name


def disconnect(app):
    name = alias(app)
    if name in connections.settings:
        if hasattr(connections._connections, name):
            connections[name].close()
            delattr(connections._connections, name)
        del connections.settings[name]


def _server_connection():
    import psycopg

    db = settings.DATABASES["default"]
    return psycopg.connect(
        host=db.get("HOST") or None,
        port=db.get("PORT") or None,
        user=db.get("USER") or None,
        password=db.get("PASSWORD") or None,
        dbname="postgres",
        autocommit=True,
    )


def database_exists(app):
    if not _is_postgres():
        return sqlite_path(app).exists()
    with _server_connection() as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [alias(app)]).fetchone() is not None


def create_database(app):
    """Create the database if it is missing. Returns True when it created it."""
    if not _is_postgres():
        path = sqlite_path(app)
        path.parent.mkdir(parents=True, exist_ok=True)
        return not path.exists()  # SQLite creates the file on first connection
    from psycopg import errors, sql

    with _server_connection() as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [alias(app)]).fetchone():
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(alias(app))))
        except errors.DuplicateDatabase:
            return False
    return True


def drop_database(app):
    disconnect(app)
    if not _is_postgres():
        path = sqlite_path(app)
        existed = path.exists()
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return existed
    from psycopg import sql

    with _server_connection() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(alias(app))))
    return True


def migrate(app):
    call_command("migrate", database=connect(app), interactive=False, verbosity=0)


def ensure_superuser(app, username, password_hash):
    """Create the initial superuser from the hash the supervisor sent; an existing account is left as it is."""
    from django.contrib.auth import get_user_model

    users = get_user_model().objects.db_manager(connect(app))
    if not username or users.filter(username=username).exists():
        return False
    users.create(username=username, password=password_hash, is_staff=True, is_superuser=True, is_active=True)
    return True
