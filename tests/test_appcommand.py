"""A management command inside one hosted application (workers.appcommand, the ``manage`` command): it works on the
application's own database, its output and exit status are captured, and what must not run is refused."""

import pytest
from django.core.management import call_command

from exchange import contract
from workers import appcommand, provisioning

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture
def crm():
    provisioning.create_database("fleetcmd")
    provisioning.migrate("fleetcmd")
    return "fleetcmd"


def run(name, *args, app="fleetcmd"):
    return appcommand.run(app, "env_a", {"name": name, "args": list(args)})


def test_it_runs_on_the_applications_own_database(crm):
    call_command("migrate", "auth", "0011", database=provisioning.connect(crm), verbosity=0)

    shown = run("showmigrations", "auth")

    assert shown["exit_status"] == 0 and shown["state"] == contract.RAN
    assert "[ ] 0012_alter_user_first_name_max_length" in shown["output"]  # this worker's own database has it
    assert "[X] 0011_update_proxy_permissions" in shown["output"]


def test_a_command_error_and_a_bad_argument_are_exit_status_1_with_the_message(crm):
    failed = run("migrate", "nosuchapp")
    assert failed["exit_status"] == 1 and "No installed app with label 'nosuchapp'" in failed["output"]
    bad = run("check", "--no-such-option")
    assert bad["exit_status"] == 1 and "unrecognized arguments: --no-such-option" in bad["output"]


@pytest.mark.parametrize("name, args, why", [
    ("shell", [], "cannot be run inside an application"),
    ("runworker", [], "cannot be run inside an application"),
    ("rm -rf /", [], "is not a management command name"),
    ("../check", [], "is not a management command name"),
    ("nosuchcommand", [], "not a management command on this worker"),
    ("check", ["--database=default"], "--database is always the application's own database"),
    ("check", ["--database", "default"], "--database is always the application's own database"),
    ("check", "--deploy", "the arguments must be a list of strings"),
    ("check", [1], "the arguments must be a list of strings"),
    ("check", ["x"] * 51, "at most 50 arguments"),
])
def test_what_must_not_run_is_refused_with_exit_status_2(crm, name, args, why):
    answer = appcommand.run(crm, "env_a", {"name": name, "args": args})
    assert answer["exit_status"] == 2
    assert answer["output"].startswith("refused: ") and why in answer["output"]


def test_an_application_without_a_database_here_is_refused():
    answer = run("check", app="ghost")
    assert answer["exit_status"] == 2 and "has no database on env_a" in answer["output"]


def test_the_output_kept_is_bounded_and_says_how_much_was_dropped():
    out = appcommand.Bounded(10)
    out.write("0123456")
    out.write("789abcdef")
    assert out.value() == "0123456789" and out.dropped == 6
