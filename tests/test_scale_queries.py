"""Costs that must not grow with the number of rows: every admin list, API page and /metrics, and the controller's
mirror and pass, in as many queries at a few rows as at ten times more (bench/scale.py measures the times at
100,000 applications on 10,000 environments, with the same seeding and the same pages)."""

import time
from datetime import datetime
from datetime import timezone as dt_timezone

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.models import Application, Placement
from bench.scale import app_name, env_name, heartbeat_all, pages, report_all
from controller.loop import Controller
from environments.models import Environment
from exchange import contract

pytestmark = pytest.mark.django_db
TOKEN = "scale-token-0123456789abcdef0123"


@pytest.fixture(autouse=True)
def _token(settings):
    settings.SUPERVISOR_API_TOKEN = TOKEN


def seed(r, n_envs, n_apps):
    """N_ENVS environments heartbeating (rows and registrations) and N_APPS applications, one placement each, with
    their reported state in Redis: the bench's seeding, at any size (rows already there are kept)."""
    now = timezone.now()
    have_envs, have_apps = Environment.objects.count(), Application.objects.count()
    Environment.objects.bulk_create(
        Environment(name=env_name(i), url=f"http://127.0.0.1:{20000 + i}", version=contract.VERSION,
                    last_heartbeat_at=now) for i in range(have_envs, n_envs))
    envs = list(Environment.objects.order_by("pk"))
    heartbeat_all(r, envs, time.time())
    Application.objects.bulk_create(
        Application(name=app_name(i), display_name=f"App {i}", desired_state=contract.RUNNING,
                    admin_username="boss", admin_password_hash="!", attempts=int(i % 10 == 0))
        for i in range(have_apps, n_apps))
    apps = list(Application.objects.order_by("pk").values_list("pk", "name"))[have_apps:]
    Placement.objects.bulk_create(
        Placement(application_id=pk, environment=envs[(have_apps + i) % len(envs)], state=contract.RUNNING,
                  state_at=now) for i, (pk, _) in enumerate(apps))
    report_all(r, [(name, envs[(have_apps + i) % len(envs)].name, contract.RUNNING)
                   for i, (_, name) in enumerate(apps)], now.timestamp())


def queries(client, path):
    client.get(path, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")  # warm up (a first load may rebuild the cache)
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(path, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, (path, response.status_code)
    return len(ctx.captured_queries)


def test_every_admin_list_api_page_and_metrics_costs_as_many_queries_at_ten_times_the_rows(admin_client, r):
    seed(r, 4, 40)
    few = {label: queries(admin_client, path) for label, path in pages(4).items()}
    seed(r, 40, 400)  # past the environment filter's list of links, too
    many = {label: queries(admin_client, path) for label, path in pages(4).items()}

    assert many == few


@pytest.mark.django_db(transaction=True)  # a pass closes old connections, as runsupervisor's loop needs
def test_the_controllers_mirror_and_pass_cost_as_many_queries_at_ten_times_the_rows(r):
    def costs(controller):
        controller.run_pass()  # the first pass compares everything
        heartbeat_all(r, Environment.objects.all(), time.time())
        with CaptureQueriesContext(connection) as mirrored:
            controller.mirror()
        heartbeat_all(r, Environment.objects.all(), time.time())
        with CaptureQueriesContext(connection) as passed:
            assert controller.run_pass()
        controller.lease.release()
        return len(mirrored), len(passed)

    seed(r, 4, 40)
    few = costs(Controller())
    seed(r, 40, 400)
    many = costs(Controller())

    assert many == few


def test_a_mirror_after_all_heartbeats_updates_every_environment_in_one_statement(r):
    seed(r, 30, 30)
    controller = Controller()
    controller.mirror()
    at = time.time() + 1
    heartbeat_all(r, Environment.objects.all(), at)

    with CaptureQueriesContext(connection) as ctx:
        controller.mirror()

    updates = [q["sql"] for q in ctx.captured_queries if "UPDATE" in q["sql"]]
    assert len(updates) == 1  # an executemany on SQLite, an UPDATE … FROM unnest(…) on PostgreSQL
    assert Environment.objects.filter(last_heartbeat_at__gte=datetime.fromtimestamp(at, dt_timezone.utc)).count() == 30
