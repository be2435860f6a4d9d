"""The audit log's model and its one way in (audit.log.record): append-only, secrets never stored, bounded, and a
record that cannot be written never fails what it describes."""

from datetime import timedelta

import pytest
from django.db import DatabaseError, connection
from django.utils import timezone

from audit import actions
from audit import log as audit
from audit.models import AppendOnly, Entry

pytestmark = pytest.mark.django_db

ALICE = audit.Actor(actions.USER, "alice")


def test_an_entry_is_recorded_with_its_actor_action_target_parameters_and_outcome():
    entry = audit.record(ALICE, actions.APPLICATION_START, "application:crm", {"timeout": 30},
                         actions.FAILED, status=504, detail="env_a did not answer")

    stored = Entry.objects.get(pk=entry.pk)
    assert (stored.actor_kind, stored.actor, stored.action, stored.target) == (
        "user", "alice", "application.start", "application:crm")
    assert (stored.parameters, stored.outcome, stored.status, stored.detail) == (
        {"timeout": 30}, "failed", 504, "env_a did not answer")


def test_an_entry_is_never_changed_nor_deleted_through_the_model():
    entry = audit.record(ALICE, actions.APPLICATION_STOP, "application:crm")
    entry.outcome = actions.OK
    entry.actor = "mallory"

    for attempt in (entry.save, entry.delete, lambda: Entry.objects.update(actor="mallory"),
                    lambda: Entry.objects.filter(pk=entry.pk).delete()):
        with pytest.raises(AppendOnly):
            attempt()
    assert Entry.objects.get(pk=entry.pk).actor == "alice"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the trigger is PostgreSQL's")
def test_on_postgresql_the_table_itself_refuses_update_and_delete():
    entry = audit.record(ALICE, actions.APPLICATION_STOP, "application:crm")
    for sql in ("UPDATE audit_entry SET actor = 'mallory'", "DELETE FROM audit_entry"):
        with pytest.raises(DatabaseError, match="append-only"), connection.cursor() as cursor:
            from django.db import transaction

            with transaction.atomic():
                cursor.execute(sql)
    assert Entry.objects.get(pk=entry.pk).actor == "alice"


def test_the_prune_deletes_only_entries_older_than_the_retention_a_batch_at_a_time():
    now = timezone.now()
    for days in (100, 95, 91, 10):
        audit.record(ALICE, actions.APPLICATION_START, f"application:app{days}", at=now - timedelta(days=days))

    assert Entry.objects.prune(now, days=90, batch=2) == 2
    assert Entry.objects.prune(now, days=90, batch=2) == 1
    assert Entry.objects.prune(now, days=90, batch=2) == 0
    assert list(Entry.objects.values_list("target", flat=True)) == ["application:app10"]


@pytest.mark.parametrize("params", [
    {"admin_password": "hunter2"}, {"password": "hunter2"}, {"token": "hunter2"}, {"private_key": "hunter2"},
    {"SECRET": "hunter2"}, {"nested": {"api_key": "hunter2"}}, {"list": [{"passwd": "hunter2"}]},
    {"note": "appsup_" + "hunter2" * 4}, {"url": "https://bob:hunter2@hooks.example.com/x"},
    {"pem": "-----BEGIN PRIVATE KEY-----hunter2"}, {"authorization": "Bearer hunter2"},
])
def test_secrets_are_removed_from_the_parameters(params):
    entry = audit.record(ALICE, actions.APPLICATION_CREATE, "application:crm", params)

    assert "hunter2" not in str(Entry.objects.get(pk=entry.pk).parameters)


def test_what_is_not_secret_is_kept_and_large_parameters_are_bounded():
    entry = audit.record(ALICE, actions.APPLICATION_CREATE, "application:crm", {
        "name": "crm", "environments": ["env_a", "env_b"], "drop_database": True, "huge": "x" * 10_000,
        "many": list(range(1000)), "deep": {"a": {"b": {"c": {"d": {"f": {"g": {"e": 1}}}}}}}})

    parameters = Entry.objects.get(pk=entry.pk).parameters
    assert parameters["name"] == "crm" and parameters["environments"] == ["env_a", "env_b"]
    assert parameters["drop_database"] is True
    assert len(parameters["huge"]) <= audit.MAX_STRING + 1
    assert len(parameters["many"]) == audit.MAX_ITEMS + 1
    assert "e" not in str(parameters["deep"])


def test_a_command_line_actor_never_shows_a_password_given_as_an_option():
    actor = audit.Actor.command_line(["manage.py", "ensureadmin", "--username", "root", "--password", "hunter2",
                                      "--api-token=hunter2"])

    assert actor.kind == actions.COMMAND_LINE
    assert "hunter2" not in actor.name
    assert "manage.py ensureadmin --username root --password '[removed]' '--api-token=[removed]'" in actor.name


def test_a_record_that_cannot_be_written_is_logged_and_does_not_raise(monkeypatch, caplog):
    def broken(self, *args, **kwargs):
        raise DatabaseError("the disk is full")

    monkeypatch.setattr("django.db.models.Model.save", broken)

    assert audit.record(ALICE, actions.APPLICATION_START, "application:crm") is None
    assert "could not record application.start application:crm by user alice" in caplog.text


def test_entries_recorded_without_an_actor_are_those_of_the_actor_in_charge():
    with audit.acting_as(audit.Actor.controller("host-1:42")):
        entry = audit.record(None, actions.CACHE_REBUILD, "cache:configuration")
    outside = audit.record(None, actions.CACHE_REBUILD, "cache:configuration")

    assert (entry.actor_kind, entry.actor) == ("controller", "host-1:42")
    assert outside.actor_kind == actions.COMMAND_LINE  # this process's command line: pytest's
