"""django-rq's dashboard in the admin lists every environment's command queue, and survives what Redis may hold."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from exchange import channel, contract
from exchange.redis_client import command_redis

from .factories import register_environment

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(get_user_model().objects.create_superuser("root", password="x"))
    return client


def queue_index(name):
    from django_rq.settings import get_queues_list

    return [q["name"] for q in get_queues_list()].index(contract.queue_name(name))


def test_the_dashboard_lists_each_registered_environments_queue(admin_client):
    register_environment("env_a")
    register_environment("env_b")

    response = admin_client.get(reverse("admin:django_rq_home"))

    assert response.status_code == 200
    text = response.content.decode()
    assert contract.queue_name("env_a") in text and contract.queue_name("env_b") in text


def test_the_admin_index_links_to_the_dashboard(admin_client):
    response = admin_client.get(reverse("admin:index"))
    assert reverse("admin:django_rq_dashboard_changelist") in response.content.decode()


def test_a_queued_command_is_shown_with_its_job_page(admin_client, django_capture_on_commit_callbacks):
    register_environment("env_a")
    with django_capture_on_commit_callbacks(execute=True):
        job_id = channel.enqueue("env_a", contract.START, "crm", {"admin_username": "boss"})
    index = queue_index("env_a")

    listing = admin_client.get(reverse("admin:django_rq_jobs", args=[index]))
    detail = admin_client.get(reverse("admin:django_rq_job_detail", args=[index, job_id]))

    assert listing.status_code == 200 and job_id in listing.content.decode()
    assert detail.status_code == 200 and "crm" in detail.content.decode()


def test_a_queued_command_is_shown_on_the_default_embedded_redis(admin_client, settings, tmp_path,
                                                                  django_capture_on_commit_callbacks):
    from exchange import redis_client

    # The default setup: both connections on the embedded Redis's unix socket (unix:///…).
    settings.APP_SUPERVISOR_REDIS_URL = settings.APP_COMMAND_REDIS_URL = ""
    settings.APP_STORAGE_DIR = tmp_path
    redis_client.reset()
    try:
        register_environment("env_a")
        with django_capture_on_commit_callbacks(execute=True):
            job_id = channel.enqueue("env_a", contract.START, "crm", {"admin_username": "boss"})
        index = queue_index("env_a")
        detail = admin_client.get(reverse("admin:django_rq_job_detail", args=[index, job_id]))
        assert detail.status_code == 200 and "crm" in detail.content.decode()
    finally:
        redis_client.stop_embedded()


GARBLED = {"data": b"\x00\xff not json", "meta": b"\x80\x04garbage", "exc_info": b"\x01\x02", "result": b"not signed",
           "status": "failed", "created_at": "not a date", "enqueued_at": "nor this", "timeout": "soon",
           "result_ttl": "x"}


def plant(conn, job_id, fields, queue="env_a", at_front=False):
    """A job hash written straight to Redis, without the shared secret, and queued."""
    conn.hset(f"rq:job:{job_id}", mapping={"origin": contract.queue_name(queue), **fields})
    key = f"rq:queue:{contract.queue_name(queue)}"
    (conn.lpush if at_front else conn.rpush)(key, job_id)


def test_forged_and_garbled_jobs_are_left_out_of_listings_and_their_pages_say_why(admin_client,
                                                                                 django_capture_on_commit_callbacks):
    register_environment("env_a")
    with django_capture_on_commit_callbacks(execute=True):
        real = channel.enqueue("env_a", contract.START, "crm")
    conn = command_redis()
    plant(conn, "garbled-first", GARBLED, at_front=True)  # what the dashboard dates the queue by
    plant(conn, "unsigned", {"data": b'["workers.commands.execute", null, [], {}]', "status": "queued",
                             "created_at": "2024-01-01T00:00:00.000000Z", "enqueued_at": "2024-01-01T00:00:00.000000Z"})
    plant(conn, "never-enqueued", {"data": b"x", "status": "queued"})
    plant(conn, "no-hash-at-all", {})
    conn.delete("rq:job:no-hash-at-all")
    index = queue_index("env_a")

    stats = admin_client.get(reverse("admin:django_rq_home"))
    listing = admin_client.get(reverse("admin:django_rq_jobs", args=[index]))
    garbled = admin_client.get(reverse("admin:django_rq_job_detail", args=[index, "garbled-first"]))
    unsigned = admin_client.get(reverse("admin:django_rq_job_detail", args=[index, "unsigned"]))
    missing = admin_client.get(reverse("admin:django_rq_job_detail", args=[index, "no-hash-at-all"]))

    assert stats.status_code == 200
    assert listing.status_code == 200
    assert real in listing.content.decode() and "garbled-first" not in listing.content.decode()
    assert garbled.status_code == 422
    assert "cannot be read from Redis" in garbled.content.decode() and "not a date" in garbled.content.decode()
    assert unsigned.status_code == 200  # shown, its data marked as not valid: it does not verify
    assert missing.status_code == 404


def test_a_garbled_job_in_the_failed_registry_is_a_422_naming_it(admin_client):
    register_environment("env_a")
    conn = command_redis()
    conn.hset("rq:job:bad", mapping={"origin": contract.queue_name("env_a"), **GARBLED})
    conn.zadd(f"rq:failed:{contract.queue_name('env_a')}", {"bad": 9999999999})

    response = admin_client.get(reverse("admin:django_rq_failed_jobs", args=[queue_index("env_a")]))

    assert response.status_code == 422
    assert "cannot be read from Redis" in response.content.decode()


def test_a_command_redis_that_does_not_answer_is_a_503_saying_so(admin_client, settings):
    register_environment("env_a")
    from .conftest import free_port

    settings.APP_COMMAND_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"

    response = admin_client.get(reverse("admin:django_rq_home"))

    assert response.status_code == 503
    assert "Redis does not answer" in response.content.decode()
