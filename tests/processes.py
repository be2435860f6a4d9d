"""Real processes for the tests that cross process boundaries: worker agents, supervisor and worker web.

Each process gets its configuration the documented way, through environment variables.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from django.conf import settings

from bench.cluster import RedisServer  # noqa: F401  (tests import it from here)
from supervisor_project.web import web_command

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# The alert webhooks' HMAC key of the supervisor processes a test starts (tests/conftest.py sets it in-process).
SHARED_SECRET = "test-shared-secret-0123456789abcdef"


def _derived_key(name):
    """The private key text of signer NAME in the test deployment: derived from its name, so that every process of a
    test (and the test itself) holds the same keys without passing them around."""
    import base64
    import hashlib

    return base64.urlsafe_b64encode(hashlib.sha256(f"appsup-test-key:{name}".encode()).digest()).decode()


def environment_key(name):
    """Environment NAME's private key in the test deployment."""
    return _derived_key(f"environment:{name}")


def environment_public_key(name):
    from exchange import keys

    return keys.public_text(keys.private_key(environment_key(name)))


SUPERVISOR_KEY = _derived_key("supervisor")


def supervisor_public_key():
    from exchange import keys

    return keys.public_text(keys.private_key(SUPERVISOR_KEY))


class TestSigningKeys(dict):
    """settings.APP_SIGNING_KEYS of the test process: the supervisor's key and every environment's (derived from
    its name), so that a test writes what any worker would, each signed with its own environment's key."""

    def __missing__(self, name):
        return environment_key(name)


def signing_keys():
    return TestSigningKeys(supervisor=SUPERVISOR_KEY)


def base_env(storage, redis_url, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APP_", "ENVIRONMENT_", "DB_", "DJANGO_"))}
    env.pop("DATABASE_URL", None)
    env.update(
        APP_SUPERVISOR_REDIS_URL=redis_url,
        APP_COMMAND_REDIS_URL=redis_url,
        APP_STORAGE_DIR=str(storage),
        APP_SHARED_SECRET=SHARED_SECRET,
        APP_SUPERVISOR_PUBLIC_KEYS=supervisor_public_key(),
        # The supervisor records each environment's key at its first registration: the tests' workers are started
        # by the tests, not enrolled one by one (tests/test_enrollment*.py turn it off).
        APP_TRUST_ON_FIRST_USE="true",
        # A role stated, not left unset: unset is a single instance (single/), which a test asks for by name.
        APP_MODE="supervisor",
        PYTHONUNBUFFERED="1",
    )
    env.update({k: str(v) for k, v in extra.items()})
    if env["APP_MODE"] == "supervisor":
        env.setdefault("APP_SUPERVISOR_KEY", SUPERVISOR_KEY)
    elif env.get("ENVIRONMENT_NAME"):
        env.setdefault("APP_ENVIRONMENT_KEY", environment_key(env["ENVIRONMENT_NAME"]))
    return env


def postgres_env(database):
    """DB_* variables for DATABASE on the PostgreSQL server the test run uses, when it uses one."""
    db = settings.DATABASES["default"]
    if not db["ENGINE"].endswith("postgresql"):
        return {}
    return {"DB_DIALECT": "postgres", "DB_HOST": db.get("HOST") or "127.0.0.1", "DB_PORT": db.get("PORT") or "5432",
            "DB_USER": db.get("USER") or "postgres", "DB_PASSWORD": db.get("PASSWORD") or "", "DB_DATABASE": database}


@contextlib.contextmanager
def own_postgres_databases(names):
    """On PostgreSQL each process of a test has its own database on the server: created empty for the block,
    dropped after (with NAMES, whatever else is named there, e.g. hosted applications' databases). Nothing on
    SQLite."""
    if not postgres_env("x"):
        yield
        return
    from psycopg import sql

    from workers import provisioning

    def drop(conn, name):
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    with provisioning._server_connection() as conn:
        for name in names:
            drop(conn, name)
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield
    finally:
        with provisioning._server_connection() as conn:
            for name in names:
                drop(conn, name)


def worker_env(name, port, storage, redis_url, **extra):
    return base_env(storage, redis_url, APP_MODE="worker", ENVIRONMENT_NAME=name,
                    ENVIRONMENT_URL=f"http://127.0.0.1:{port}", **extra)


def manage(args, env, check=True, timeout=120):
    done = subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"manage.py {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done


def manage_each(args, envs, timeout=120):
    """``manage.py ARGS`` once per environment of ENVS, side by side (each role migrating its own database took a
    second each, one after the other, in every process test's setup)."""
    running = [subprocess.Popen([PYTHON, "manage.py", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for env in envs]
    failures = []
    for proc in running:
        _, stderr = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            failures.append(f"manage.py {' '.join(args)} exited {proc.returncode}:\n{stderr[-3000:]}")
    if failures:
        raise AssertionError("\n".join(failures))


class Process:
    """A child process whose output goes to a log file, stopped for sure at the end of the test."""

    def __init__(self, args, env, log_path):
        self.log_path = Path(log_path)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    @property
    def pid(self):
        return self.proc.pid

    def output(self):
        self.log.flush()
        return self.log_path.read_text()

    def signal(self, signum):
        self.proc.send_signal(signum)

    def wait(self, timeout):
        return self.proc.wait(timeout)

    def stop(self):
        stop_all([self])

    def _reap(self):
        if self.proc.poll() is None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def stop_all(processes):
    """Stop PROCESSES, all told at once: one after the other, a cluster's teardown took seconds of every test."""
    for process in processes:
        if process.proc.poll() is None:
            process.proc.send_signal(signal.SIGTERM)
    for process in processes:
        process._reap()


def runworker(env, log_path):
    return Process([PYTHON, "manage.py", "runworker"], env, log_path)


def web_process(env, port, log_path):
    """A web process of any role, started the documented way (supervisor_project.web.web_command)."""
    return Process(web_command(port, python=PYTHON), env, log_path)


def wait_for(predicate, timeout=30, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def http_ready(url):
    def check():
        try:
            return requests.get(url, timeout=1).status_code < 500
        except requests.ConnectionError:
            return False

    return check


def runworker_without_web_probe(env, log_path):
    """An agent with no web process of its own to watch: its web is reported unknown, the environment online."""
    return Process([PYTHON, "manage.py", "runworker", "--no-web-probe"], env, log_path)
