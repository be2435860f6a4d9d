import pytest

from apps import cache
from apps.models import Application
from exchange import contract, directory, status

from .factories import create_application, register_environment

pytestmark = pytest.mark.django_db


def test_view_has_config_environments_and_statuses(r):
    register_environment("env_a", url="http://a:15000", proxy_url="http://worker-a")
    register_environment("env_b")
    app = create_application("crm", ["env_b", "env_a"])
    cache.publish(r, Application.objects.with_placements().get(pk=app.pk))
    status.write(r, "crm", "env_a", contract.RUNNING)

    view = directory.read("crm")

    assert view.environment_names == ["env_b", "env_a"]
    assert view.environments["env_a"]["proxy_url"] == "http://worker-a"
    assert view.statuses["env_a"]["state"] == contract.RUNNING
    assert "env_b" not in view.statuses


def test_unknown_application_is_none():
    assert directory.read("nope") is None


def test_cached_for_the_ttl_then_read_again(r):
    register_environment("env_a")
    app = create_application("crm", ["env_a"])
    cache.publish(r, Application.objects.with_placements().get(pk=app.pk))
    now = [0.0]
    d = directory.Directory(ttl=1.0, clock=lambda: now[0])
    status.write(r, "crm", "env_a", contract.RUNNING)
    assert d.lookup("crm").statuses["env_a"]["state"] == contract.RUNNING

    status.write(r, "crm", "env_a", contract.STOPPED)
    now[0] = 0.5
    assert d.lookup("crm").statuses["env_a"]["state"] == contract.RUNNING  # still the cached view
    now[0] = 1.0
    assert d.lookup("crm").statuses["env_a"]["state"] == contract.STOPPED


def test_the_cache_stays_bounded_when_asked_for_many_unknown_names(monkeypatch):
    monkeypatch.setattr(directory, "MAX_ENTRIES", 10)
    now = [0.0]
    d = directory.Directory(ttl=1.0, clock=lambda: now[0])
    for i in range(25):
        now[0] = i * 2.0  # each lookup finds the previous ones expired
        assert d.lookup(f"nope{i}") is None
    assert len(d._entries) <= 10


def test_cached_never_reads_redis(r):
    d = directory.Directory(ttl=1.0, clock=lambda: 0.0)
    assert d.cached("crm") == (False, None)
    d.lookup("crm")
    assert d.cached("crm") == (True, None)  # a miss is cached too
