from datetime import timedelta

import pytest
from django.utils import timezone

from environments.models import Environment
from exchange import contract

from .factories import create_application, register_environment

pytestmark = pytest.mark.django_db


@pytest.fixture
def timeout(settings):
    settings.APP_HEARTBEAT_INTERVAL = 120
    settings.APP_HEARTBEAT_TIMEOUT = 260
    return 260


def env_with_heartbeat(seconds_ago, now, **kwargs):
    return Environment.objects.create(
        name=kwargs.pop("name", "env_a"), url="http://a", last_heartbeat_at=now - timedelta(seconds=seconds_ago),
        **kwargs
    )


def test_late_heartbeat_within_the_grace_keeps_it_online(timeout):
    now = timezone.now()
    env = env_with_heartbeat(130, now)  # one interval and a bit: a bare "within one interval" rule would flap
    assert env.is_online(now) and env.status(now) == contract.ONLINE


def test_heartbeat_older_than_the_timeout_is_offline(timeout):
    now = timezone.now()
    env = env_with_heartbeat(261, now)
    assert not env.is_online(now)
    assert "last heartbeat 261 s ago" in env.offline_reason(now)


def test_never_heard_from_is_offline():
    env = Environment.objects.create(name="env_a", url="http://a")
    assert not env.is_online()
    assert "never" in env.offline_reason()


def test_online_and_offline_querysets_agree_with_is_online(timeout):
    now = timezone.now()
    env_with_heartbeat(10, now, name="fresh")
    env_with_heartbeat(1000, now, name="stale")
    env_with_heartbeat(10, now, name="stopped", stopped_at=now)
    assert list(Environment.objects.online(now).values_list("name", flat=True)) == ["fresh"]
    assert sorted(Environment.objects.offline(now).values_list("name", flat=True)) == ["stale", "stopped"]


def test_offline_environment_shows_unknown_state_not_its_stale_value(timeout):
    register_environment("env_a")
    register_environment("env_b", heartbeat_at=0)
    app = create_application("crm", ["env_a", "env_b"])
    app.placements.update(state=contract.RUNNING)
    shown = {p.environment.name: p.display_state() for p in app.placements.select_related("environment")}
    assert shown == {"env_a": contract.RUNNING, "env_b": contract.UNKNOWN}
