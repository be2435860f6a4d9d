"""GET /readyz (supervisor and worker): 200 while the database and Redis answer, else 503 naming what does not,
quickly even when Redis hangs; and the small pages every site is asked for (/favicon.ico, /)."""

import signal
import time

import pytest

from exchange import redis_client
from monitoring import readiness

from .conftest import free_port
from .processes import RedisServer

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_probe():
    readiness.reset()
    yield
    readiness.reset()


@pytest.fixture
def own_redis(settings, tmp_path):
    """A Redis server of the test's own, which it may kill or freeze, used for both channels."""
    workdir = tmp_path / "own-redis"
    workdir.mkdir()
    server = RedisServer(free_port(), workdir)
    server.start()
    settings.APP_SUPERVISOR_REDIS_URL = settings.APP_COMMAND_REDIS_URL = server.url
    redis_client.reset()
    yield server
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGCONT)
    server.stop()
    redis_client.reset()


@pytest.fixture
def worker_urls(settings):
    settings.ROOT_URLCONF = "workers.urls"


def test_readyz_is_200_while_the_database_and_redis_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


def test_a_killed_redis_makes_readyz_503_naming_redis_and_it_recovers(client, own_redis):
    assert client.get("/readyz").status_code == 200

    own_redis.kill()
    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["down"] == ["redis"]
    assert "redis" in response.json()["error"]
    assert "127.0.0.1" not in response.content.decode()  # anonymous probes learn what is down, not where

    own_redis.start()
    assert client.get("/readyz").status_code == 200


def test_a_hung_redis_makes_readyz_503_within_about_a_second(client, own_redis):
    assert client.get("/readyz").status_code == 200
    own_redis.proc.send_signal(signal.SIGSTOP)
    try:
        began = time.monotonic()
        response = client.get("/readyz")
        took = time.monotonic() - began
    finally:
        own_redis.proc.send_signal(signal.SIGCONT)
    assert response.status_code == 503 and response.json()["down"] == ["redis"]
    assert took < readiness.CHECK_TIMEOUT + 1


def test_the_command_channels_redis_is_named_apart_when_it_is_another_server(client, settings):
    settings.APP_COMMAND_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["down"] == ["redis (commands)"]


def test_a_database_that_does_not_answer_is_named(monkeypatch):
    from django.db import OperationalError, connection

    def refuse():
        raise OperationalError("could not connect to server: Connection refused")

    monkeypatch.setattr(connection, "cursor", refuse)
    assert readiness.problems() == {"database": "could not connect to server: Connection refused"}


def test_a_worker_serves_readyz_too_and_names_its_redis_when_down(client, worker_urls, own_redis):
    assert client.get("/readyz").status_code == 200
    own_redis.kill()
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["down"] == ["redis"]


def test_readyz_writes_nothing_to_redis(client, own_redis):
    r = redis_client.supervisor_redis()  # the test's own server: nothing else sends it commands

    def calls():
        return {name: stats["calls"] for name, stats in r.info("commandstats").items()}

    before = calls()
    assert client.get("/readyz").status_code == 200
    after = calls()
    used = {name for name, n in after.items() if n != before.get(name)}
    # A new connection's handshake, the PING, and this test's INFO.
    assert used <= {"cmdstat_ping", "cmdstat_info", "cmdstat_hello", "cmdstat_client"}, used
    assert "cmdstat_ping" in used


@pytest.mark.parametrize("urlconf", ["supervisor_project.urls", "workers.urls"])
def test_favicon_is_answered_without_a_404(client, settings, urlconf):
    settings.ROOT_URLCONF = urlconf
    response = client.get("/favicon.ico")
    assert response.status_code == 204
    assert "max-age=86400" in response["Cache-Control"]


def test_the_supervisors_root_leads_to_the_admin(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/"
