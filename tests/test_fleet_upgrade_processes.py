"""Fleet upgrades and commands across applications, end to end: workers restarted with hosted code that adds a
migration report it pending on each of their applications and a new version; one upgrade call migrates them all
in the background, with progress on /ws/events/, the new column then served through the supervisor; a migration
that fails leaves its application stopped with the error while the others go on; ``manage.py appcommand --all``
runs a command in every application and prints each one's output, one failure not stopping the rest. Real
processes (supervisor web and controller, two worker webs and agents), real Redis, real HTTP."""

import asyncio
import json
import time

import pytest
import requests
from websockets.asyncio.client import connect

from exchange import contract

from . import fleet_code
from .local_cluster import TOKEN, Cluster
from .processes import http_ready, manage, own_postgres_databases, wait_for, web_process

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery"
DATABASES = ["appsup_fleet_sup", "appsup_fleet_env_a", "appsup_fleet_env_b"]
APPS = {"fleet_a": "env_a", "fleet_b": "env_b", "fleet_c": "env_a"}


def running_cluster(tmp_path, redis_url, **supervisor_overrides):
    code = fleet_code.write(tmp_path / "code-v1", 1)
    overrides = {name: {**fleet_code.HOSTED, "PYTHONPATH": str(code)} for name in ("env_a", "env_b")}
    with own_postgres_databases(DATABASES + [f"app_{name}" for name in APPS]):
        c = Cluster(tmp_path, redis_url, worker_web=True, worker_overrides=overrides, databases=DATABASES,
                    supervisor_overrides=supervisor_overrides)
        try:
            c.start()
            wait_for(lambda: {c.status_of("env_a"), c.status_of("env_b")} == {"online"}, what="registration")
            for name, env in APPS.items():
                created = c.api("POST", "apps/", json={"name": name, "environments": [env], "admin_username": "boss",
                                                       "admin_password": PASSWORD})
                assert created.status_code == 201, created.text
                started = c.api("POST", f"apps/{name}/start")
                assert started.status_code == 200, started.text
            yield c
        finally:
            c.stop()


@pytest.fixture
def cluster(tmp_path, redis_url):
    yield from running_cluster(tmp_path, redis_url)


@pytest.fixture
def auto_upgrading_cluster(tmp_path, redis_url):
    yield from running_cluster(tmp_path, redis_url, APP_AUTO_UPGRADE="true")


def restart_workers_with(cluster, code):
    """Every worker's web and agent stopped, then started again on the code under CODE."""
    for name in ("env_a", "env_b"):
        cluster.agents[name].stop()
        cluster.webs[name].stop()
        cluster.worker_envs[name]["PYTHONPATH"] = str(code)
        cluster.webs[name] = cluster._track(web_process(cluster.worker_envs[name], cluster.worker_ports[name],
                                                        cluster.tmp / f"{name}-web-2.log"))
        cluster.start_agent(name)
    for name in ("env_a", "env_b"):
        wait_for(http_ready(f"http://127.0.0.1:{cluster.worker_ports[name]}/healthz"), what=f"{name} web")


def pending(cluster, app):
    return cluster.api("GET", f"apps/{app}/").json()["pending_migrations"]


def appcommand(cluster, *args):
    return manage(["appcommand", *args], cluster.supervisor_env, check=False, timeout=180)


def socket_url(base):
    return base.replace("http://", "ws://") + "/ws/events/"


def test_a_worker_with_new_code_shows_the_migration_pending_and_one_upgrade_call_migrates_every_application(cluster):
    # Up to date after their start; a note in each, through the command channel.
    wait_for(lambda: all(pending(cluster, app) == {env: []} for app, env in APPS.items()), what="up to date")
    old_versions = {name: env["version"] for name, env in cluster.environments().items()}
    added = appcommand(cluster, "--all", "addnote", "hello")
    assert added.returncode == 0, added.stdout + added.stderr
    for app, env in APPS.items():
        assert f"=== {app} on {env}: exit 0\nadded hello" in added.stdout
    assert appcommand(cluster, "--app", "fleet_b", "addnote", "nomigrate").returncode == 0

    restart_workers_with(cluster, fleet_code.write(cluster.tmp / "code-v2", 2))

    # The new code's migration is pending on each application, and each environment reports a new version.
    wait_for(lambda: all(pending(cluster, app) == {env: ["fleetnotes.0002_priority"]} for app, env in APPS.items()),
             timeout=60, what="the new migration pending everywhere")
    versions = {name: env["version"] for name, env in cluster.environments().items()}
    assert versions["env_a"] != old_versions["env_a"] and versions["env_a"].startswith(contract.VERSION + "+")
    assert versions["env_a"] == versions["env_b"]  # the same code

    async def upgrade_with_events():
        async with connect(socket_url(cluster.base), additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["status"] == "live"
            asked = await asyncio.to_thread(cluster.api, "POST", "upgrade", json={})
            assert asked.status_code == 202, asked.text
            seen = []
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                message = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
                if message.get("type") == "upgrade" and message["id"] == asked.json()["id"]:
                    seen.append(message)
                    if message["state"] != "running":
                        break
            return asked.json(), seen

    asked, events = asyncio.run(upgrade_with_events())
    assert asked["state"] == "running" and asked["total"] == 3
    assert {(s["app"], s["environment"]) for s in asked["steps"]} == set(APPS.items())
    assert events and events[-1]["state"] == "failed", events
    assert len({(m["done"], m["failed"]) for m in events}) > 1, "progress is told as it happens"

    result = cluster.api("GET", f"upgrades/{asked['id']}").json()
    steps = {s["app"]: s for s in result["steps"]}
    assert steps["fleet_a"]["state"] == steps["fleet_c"]["state"] == "done"
    assert steps["fleet_a"]["applied"] == ["fleetnotes.0002_priority"]
    assert steps["fleet_b"]["state"] == "failed"
    assert "refuses the upgrade" in steps["fleet_b"]["error"]
    # Each migrated after a safety backup of its own on its environment, which the failure names.
    for app, env in APPS.items():
        listed = cluster.api("GET", f"apps/{app}/backups").json()["backups"]
        assert [(b["id"], b["environment"]) for b in listed if str(b["id"]) == steps[app]["backup"]] == \
            [(int(steps[app]["backup"]), env)], (app, listed)
    assert f"backup {steps['fleet_b']['backup']}" in steps["fleet_b"]["error"]
    assert result["done"] == 2 and result["failed"] == 1 and result["finished_at"]

    # Migrated: nothing pending, and the new column is served through the supervisor.
    wait_for(lambda: pending(cluster, "fleet_a") == {"env_a": []} and pending(cluster, "fleet_c") == {"env_a": []},
             what="fleet_a and fleet_c up to date")
    page = requests.get(f"{cluster.base}/apps/fleet_a/notes.json", timeout=30)
    assert page.status_code == 200, page.text
    assert page.json() == {"notes": [{"title": "hello", "priority": 0}]}
    # The failed one is stopped with the error, desired stopped (the controller leaves it), its migration still due.
    # (Its state is mirrored by the controller's next pass: a moment after the upgrade says it failed, on a busy
    # machine.)
    wait_for(lambda: cluster.api("GET", "apps/fleet_b/").json()["statuses"]["env_b"]["state"] == "stopped",
             what="fleet_b shown stopped")
    app_b = cluster.api("GET", "apps/fleet_b/").json()
    assert app_b["desired_state"] == "stopped"
    assert "refuses the upgrade" in app_b["statuses"]["env_b"]["error"]
    assert app_b["pending_migrations"] == {"env_b": ["fleetnotes.0002_priority"]}
    assert requests.get(f"{cluster.base}/apps/fleet_b/notes.json", timeout=30).status_code == 503

    # The command line: bad input is 2; fleet_b still fails (1); an application up to date needs nothing (0).
    assert manage(["upgradeapps", "--app", "nosuch"], cluster.supervisor_env, check=False).returncode == 2
    assert manage(["upgradeapps"], cluster.supervisor_env, check=False).returncode == 2
    again = manage(["upgradeapps", "--all"], cluster.supervisor_env, check=False, timeout=180)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "fleet_b on env_b: FAILED" in again.stdout
    done = manage(["upgradeapps", "--app", "fleet_a"], cluster.supervisor_env, check=False, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 to migrate" in done.stdout


def test_appcommand_runs_in_every_application_and_one_failure_does_not_stop_the_rest(cluster):
    assert appcommand(cluster, "--all", "addnote", "hello").returncode == 0
    assert appcommand(cluster, "--app", "fleet_b", "addnote", "broken").returncode == 0

    checked = appcommand(cluster, "--all", "fleetcheck")

    assert checked.returncode == 1, checked.stdout + checked.stderr
    out = checked.stdout
    assert "=== fleet_a on env_a: exit 0\nnotes: hello" in out
    assert "=== fleet_c on env_a: exit 0\nnotes: hello" in out
    assert "=== fleet_b on env_b: FAILED (exit 1)\nnotes: broken, hello\nCommandError: a note is broken" in out
    assert "fleetcheck: 2 succeeded, 1 failed" in out
    assert "fleet_b on env_b" in checked.stderr

    # Refused before anything is sent: 2. A name no worker knows: refused there, each one's failure.
    assert appcommand(cluster, "--all", "shell").returncode == 2
    assert appcommand(cluster, "--all", "check", "--database=default").returncode == 2
    assert appcommand(cluster, "--all", "rm -rf").returncode == 2
    assert appcommand(cluster, "--app", "nosuch", "check").returncode == 2
    unknown = appcommand(cluster, "--app", "fleet_a", "nosuchcommand")
    assert unknown.returncode == 1 and "not a management command on this worker" in unknown.stdout

    # The API: one application, each environment's result.
    answered = cluster.api("POST", "apps/fleet_a/command", json={"command": "fleetcheck"})
    assert answered.status_code == 200, answered.text
    body = answered.json()
    assert body["ok"] is True
    assert body["results"] == [{"app": "fleet_a", "environment": "env_a", "exit_status": 0,
                                "output": "notes: hello\n", "truncated": 0, "error": None, "ok": True}]
    failing = cluster.api("POST", "apps/fleet_b/command", json={"command": "fleetcheck"}).json()
    assert failing["ok"] is False and failing["results"][0]["exit_status"] == 1
    refused = cluster.api("POST", "apps/fleet_a/command", json={"command": "dbshell"})
    assert refused.status_code == 400 and "cannot be run inside an application" in refused.text


def test_with_auto_upgrade_workers_started_with_new_code_get_their_applications_migrated(auto_upgrading_cluster):
    cluster = auto_upgrading_cluster
    assert appcommand(cluster, "--all", "addnote", "hello").returncode == 0

    restart_workers_with(cluster, fleet_code.write(cluster.tmp / "code-v2", 2))

    def upgrades():
        found = []
        while (answer := cluster.api("GET", f"upgrades/{len(found) + 1}")).status_code == 200:
            found.append(answer.json())
        return found

    def migrated(found):
        return sorted((s["app"], s["environment"]) for u in found for s in u["steps"])

    # Each environment's agent reports as it comes back: one automatic upgrade, or one per report.
    wait_for(lambda: (found := upgrades()) and all(u["state"] != "running" for u in found)
             and migrated(found) == sorted(APPS.items()), timeout=90, what="the automatic upgrades")
    wait_for(lambda: all(pending(cluster, app) == {env: []} for app, env in APPS.items()), what="all up to date")
    time.sleep(3)  # a pass or two of the controller more: nothing is upgraded twice
    found = upgrades()
    assert all(u["automatic"] and u["asked_by"] == "APP_AUTO_UPGRADE" and u["state"] == "done" for u in found)
    assert migrated(found) == sorted(APPS.items())  # each once: once per version
    for app in APPS:
        page = requests.get(f"{cluster.base}/apps/{app}/notes.json", timeout=30)
        assert page.status_code == 200 and page.json() == {"notes": [{"title": "hello", "priority": 0}]}, page.text
