"""GET /api/environments/: shapes, liveness, and answering from the database while Redis is down."""

from datetime import datetime

import pytest

from environments.models import Environment
from exchange import redis_client

from .factories import mirror, register_environment

pytestmark = pytest.mark.django_db

TOKEN = "s3cret-token-for-tests-012345678"


@pytest.fixture
def api(client, settings):
    settings.SUPERVISOR_API_TOKEN = TOKEN

    def get(path):
        return client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})

    return get


@pytest.fixture
def redis_down(settings):
    settings.APP_SUPERVISOR_REDIS_URL = "redis://127.0.0.1:1/0"
    settings.APP_COMMAND_REDIS_URL = "redis://127.0.0.1:1/0"
    redis_client.reset()
    mirror()  # the controller's pass finds Redis away, and records it for the pages


def test_environments_are_listed_with_status_and_heartbeat(api, controller_running):
    register_environment("env_a", url="http://worker-a:15000", proxy_url="http://10.0.0.5:15000")
    register_environment("env_b", heartbeat_at=0)  # heartbeat in 1970: offline

    response = api("/api/environments/")

    assert response.status_code == 200
    assert "X-Supervisor-Warning" not in response
    body = response.json()
    assert list(body) == ["environments", "next"]
    env_a, env_b = body["environments"]
    assert set(env_a) == {"name", "url", "proxy_url", "version", "status", "problem", "last_heartbeat_at"}
    assert env_a["problem"] is None and "last heartbeat" in env_b["problem"]
    assert env_a["name"] == "env_a"
    assert env_a["url"] == "http://worker-a:15000"
    assert env_a["proxy_url"] == "http://10.0.0.5:15000"
    assert env_a["version"] == "1.0.0"
    assert env_a["status"] == "online"
    assert datetime.fromisoformat(env_a["last_heartbeat_at"]) == Environment.objects.get(name="env_a").last_heartbeat_at
    assert env_b["name"] == "env_b"
    assert env_b["status"] == "offline"
    assert env_b["last_heartbeat_at"] == "1970-01-01T00:00:00+00:00"


def test_proxy_url_defaults_to_the_url_and_a_silent_environment_has_no_heartbeat(api):
    Environment.objects.create(name="env_c", url="http://env_c.test:8000")

    (env_c,) = api("/api/environments/").json()["environments"]

    assert env_c == {
        "name": "env_c",
        "url": "http://env_c.test:8000",
        "proxy_url": "http://env_c.test:8000",
        "version": None,
        "status": "offline",
        "problem": "environment env_c is offline: it has never sent a heartbeat",
        "last_heartbeat_at": None,
    }


def test_a_registration_is_listed_once_the_controller_mirrored_it(api):
    register_environment("env_a", sync=False)
    assert api("/api/environments/").json()["environments"] == []  # reads never write

    mirror()

    assert [e["name"] for e in api("/api/environments/").json()["environments"]] == ["env_a"]


def test_while_redis_is_down_the_list_answers_from_the_database_with_a_warning(api, redis_down):
    Environment.objects.create(name="env_a", url="http://env_a.test:8000")

    response = api("/api/environments/")

    assert response.status_code == 200
    assert "Redis is unavailable" in response["X-Supervisor-Warning"]
    assert [e["name"] for e in response.json()["environments"]] == ["env_a"]


def test_environments_are_paged_by_name_with_next(api):
    for name in ("env_d", "env_b", "env_a", "env_c", "env_e"):
        Environment.objects.create(name=name, url=f"http://{name}.test:8000")

    first = api("/api/environments/?limit=2").json()
    second = api(first["next"]).json()
    third = api(second["next"]).json()

    assert [e["name"] for e in first["environments"]] == ["env_a", "env_b"]
    assert first["next"] == "http://testserver/api/environments/?limit=2&after=env_b"
    assert [e["name"] for e in second["environments"]] == ["env_c", "env_d"]
    assert [e["name"] for e in third["environments"]] == ["env_e"] and third["next"] is None
    assert api("/api/environments/").json()["next"] is None


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=x", "after=no%20name"])
def test_a_bad_limit_or_cursor_is_a_400(api, query):
    response = api(f"/api/environments/?{query}")
    assert response.status_code == 400
    assert "error" in response.json()
