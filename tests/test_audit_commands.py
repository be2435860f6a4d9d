"""Management commands that change something record their run in the audit log with the command line as actor
(the OS user and the command, secrets removed) and their outcome."""

import getpass
import sys

import pytest
from django.core.management import CommandError, call_command

from audit.models import Entry

from .factories import ThreadAgent, create_application, register_environment

pytestmark = pytest.mark.django_db(transaction=True)


def test_startapp_sequential_is_recorded_with_the_command_line_as_actor(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["manage.py", "startapp_sequential", "crm", "--timeout", "60"])
    with ThreadAgent("env_a"):
        create_application("crm", ["env_a"])
        call_command("startapp_sequential", "crm", "--timeout", "60", stdout=sys.stderr)

    entry = Entry.objects.get()
    assert (entry.actor_kind, entry.action, entry.target, entry.outcome) == (
        "command line", "application.start", "application:crm", "ok")
    assert entry.actor == f"{getpass.getuser()}: manage.py startapp_sequential crm --timeout 60"
    assert entry.parameters == {"app": "crm", "timeout": 60.0} and entry.request_id


def test_a_failed_command_is_recorded_failed_with_its_error(monkeypatch):
    register_environment("env_a")
    create_application("crm", ["env_a"])

    with pytest.raises(CommandError):
        call_command("startapp_sequential", "erp")

    entry = Entry.objects.get()
    assert (entry.action, entry.target, entry.outcome) == ("application.start", "application:erp", "failed")
    assert entry.detail.startswith("no application named 'erp'")


def test_ensureadmin_is_recorded_without_the_password(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["manage.py", "ensureadmin", "--username", "root", "--password", "hunter2"])

    call_command("ensureadmin", "--username", "root", "--password", "hunter2", stdout=sys.stderr)

    entry = Entry.objects.get()
    assert (entry.actor_kind, entry.action, entry.target, entry.outcome) == (
        "command line", "user.ensureadmin", "user:root", "ok")
    assert "hunter2" not in entry.actor + str(entry.parameters)
