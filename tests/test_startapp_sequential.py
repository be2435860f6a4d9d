"""manage.py startapp_sequential: a thin wrapper over lifecycle.run(START) with a line per environment."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apps import lifecycle
from apps.models import Placement
from exchange import channel, contract, redis_client

from .factories import ThreadAgent, create_application, hold_lock, register_environment

pytestmark = pytest.mark.django_db(transaction=True)


def start(*args):
    out = StringIO()
    call_command("startapp_sequential", *args, stdout=out)
    return out.getvalue().splitlines()


def test_starts_each_environment_in_order_with_a_line_as_each_completes():
    with ThreadAgent("env_a"), ThreadAgent("env_b"):
        create_application("crm", ["env_b", "env_a"])
        lines = start("crm", "--timeout", "60")

    assert len(lines) == 3
    assert lines[0].startswith("env_b: running (")
    assert lines[1].startswith("env_a: running (")
    assert lines[2] == "crm is running on env_b, env_a"
    assert set(Placement.objects.values_list("state", flat=True)) == {contract.RUNNING}


def test_an_offline_environment_fails_naming_it_nothing_is_sent_and_the_start_is_left_pending():
    register_environment("env_a")
    register_environment("env_b", heartbeat_at=0)
    create_application("crm", ["env_b", "env_a"])
    out = StringIO()

    with pytest.raises(CommandError, match=r"failed on env_b: environment env_b is offline"):
        call_command("startapp_sequential", "crm", "--timeout", "5", stdout=out)

    assert out.getvalue().startswith("env_b: FAILED: environment env_b is offline")
    assert out.getvalue().splitlines()[-1] == (
        "crm stays desired running: the controller (runsupervisor) completes the start on env_b once it is back online")
    assert channel.queue_for("env_b").count == 0 and channel.queue_for("env_a").count == 0


def test_no_answer_before_the_timeout_fails_naming_the_environment():
    register_environment("env_a")
    create_application("crm", ["env_a"])

    with pytest.raises(CommandError, match=r"failed on env_a: .*timeout"):
        start("crm", "--timeout", "1")


def test_an_unknown_app_is_a_clear_error():
    register_environment("env_a")
    create_application("crm", ["env_a"])

    with pytest.raises(CommandError, match=r"no application named 'nope' \(known: crm\)"):
        start("nope")


def test_an_operation_in_progress_is_a_clear_error(monkeypatch, r):
    monkeypatch.setattr(lifecycle, "LOCK_WAIT", 0.3)
    register_environment("env_a")
    create_application("crm", ["env_a"])
    hold_lock("crm")

    with pytest.raises(CommandError, match="another start/stop/restart of crm is in progress"):
        start("crm")


@pytest.mark.parametrize("timeout", ["soon", "0", "-1"])
def test_a_bad_timeout_is_refused(timeout):
    with pytest.raises(CommandError, match="seconds"):
        start("crm", f"--timeout={timeout}")


def test_redis_unavailable_is_a_clear_error(settings):
    register_environment("env_a")
    create_application("crm", ["env_a"])
    settings.APP_SUPERVISOR_REDIS_URL = settings.APP_COMMAND_REDIS_URL = "redis://127.0.0.1:1/0"
    redis_client.reset()

    with pytest.raises(CommandError, match="Redis is unavailable"):
        start("crm")
