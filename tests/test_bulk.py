"""environments.bulk: many changed rows written in one statement."""

from datetime import datetime, timezone

import pytest

from environments import bulk
from environments.models import Environment

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


@pytest.mark.parametrize("one_statement", [True, False], ids=["one statement", "a statement per row"])
def test_update_rows_stores_every_kind_of_column_as_saving_the_model_would(one_statement, monkeypatch):
    from zoneinfo import ZoneInfo

    if not one_statement:  # what an SQLite older than 3.38 does
        monkeypatch.setattr(bulk, "_sqlite_update_from", lambda connection: False)

    saved, written = make(2)
    values = {"url": "http://moved.test", "pid": 4321, "web_ok": False,
              "problem": "it's \"quoted\", {braced}, a \\ backslash, with ümlauts and 🙂",
              "refusal": "NULL", "host": "",
              "last_heartbeat_at": datetime(2026, 11, 26, 13, 0, 0, 5, tzinfo=ZoneInfo("Europe/Paris")),
              "stopped_at": None, "refusal_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)}
    for field, value in values.items():
        setattr(saved, field, value)
    saved.save()

    assert bulk.update_rows(Environment, list(values), [(written.pk, list(values.values()))]) == 1

    columns = list(values)
    assert Environment.objects.values_list(*columns).get(pk=written.pk) == \
        Environment.objects.values_list(*columns).get(pk=saved.pk)


def test_update_rows_writes_many_rows_in_one_query(django_assert_num_queries):
    envs = make(500)
    beat = datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=timezone.utc)
    with django_assert_num_queries(1):
        bulk.update_rows(Environment, ["last_heartbeat_at", "pid"], [(e.pk, [beat, i]) for i, e in enumerate(envs)])
    assert dict(Environment.objects.values_list("name", "pid")) == {e.name: i for i, e in enumerate(envs)}
    assert set(Environment.objects.values_list("last_heartbeat_at", flat=True)) == {beat}


@pytest.mark.parametrize("one_statement", [True, False], ids=["one statement", "a statement per row"])
def test_update_newer_never_puts_an_older_value_back_over_a_newer_one(one_statement, monkeypatch):
    if not one_statement:
        monkeypatch.setattr(bulk, "_sqlite_update_from", lambda connection: False)
    older, newer = datetime(2026, 11, 26, 12, 0, 0, tzinfo=timezone.utc), datetime(2026, 11, 26, 12, 0, 0, 1, tzinfo=timezone.utc)
    kept, unset, behind = make(3)
    Environment.objects.filter(pk=kept.pk).update(version="newer", last_heartbeat_at=newer)
    Environment.objects.filter(pk=behind.pk).update(version="old", last_heartbeat_at=older)

    # Each read before the other writer's newer value landed: what it writes is older than what is there.
    rows = [(kept.pk, ["older", older]), (unset.pk, ["first", older]), (behind.pk, ["caught up", newer])]
    bulk.update_rows(Environment, ["version", "last_heartbeat_at"], rows, newer="last_heartbeat_at")

    assert dict(Environment.objects.values_list("pk", "version")) == {
        kept.pk: "newer", unset.pk: "first", behind.pk: "caught up"}
