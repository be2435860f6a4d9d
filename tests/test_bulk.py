"""supervisor_project.bulk: many changed rows written in one statement."""

from datetime import datetime, timezone

import pytest

from environments.models import Environment
from supervisor_project import bulk

pytestmark = pytest.mark.django_db


def make(count):
    return Environment.objects.bulk_create(
        Environment(name=f"env{i}", url=f"http://env{i}.test", version="1.0.0") for i in range(count))


def test_update_writes_the_named_fields_of_every_row_in_one_query(django_assert_num_queries):
    make(300)
    envs = list(Environment.objects.order_by("name"))
    beat = datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=timezone.utc)
    for i, env in enumerate(envs):
        env.version = f"2.{i}"
        env.last_heartbeat_at = beat
        env.url = "http://not-saved.test"

    with django_assert_num_queries(1):
        assert bulk.update(envs, ["version", "last_heartbeat_at"]) == 300

    saved = {e.name: e for e in Environment.objects.all()}
    assert {name: env.version for name, env in saved.items()} == {env.name: env.version for env in envs}
    assert {e.last_heartbeat_at for e in saved.values()} == {beat}
    assert {e.url for e in saved.values()} != {"http://not-saved.test"}  # fields not named are left alone


def test_update_writes_nulls():
    env = make(1)[0]
    env.last_heartbeat_at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    bulk.update([env], ["last_heartbeat_at"])
    env.last_heartbeat_at = None
    bulk.update([env], ["last_heartbeat_at"])
    assert Environment.objects.get().last_heartbeat_at is None


def test_update_of_nothing_sends_no_query(django_assert_num_queries):
    with django_assert_num_queries(0):
        assert bulk.update([], ["version"]) == 0
