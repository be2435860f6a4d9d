"""Moving an application with its data between environments, end to end (apps.moves): real processes (supervisor
web and controller, two worker webs and agents with the sample notes app), real Redis, real HTTP through the
supervisor's proxy. Each environment has its own storage, so the data can only travel through the transfer."""

import secrets
import sqlite3
import threading
import time

import pytest
import requests

from .local_cluster import Cluster
from .processes import postgres_env, wait_for
from .test_hosted_code_processes import PASSWORD, logged_in

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# On PostgreSQL every test run on the machine shares one server, where crm's database (app_crm) may be another
# run's: these tests' application has a name of its own there.
APP = "mvcrm" if postgres_env("x") else "crm"
NOTES = {"APP_HOSTED_APPS": "samples.notes", "APP_HOSTED_URLCONF": "samples.notes.urls"}


@pytest.fixture
def cluster(tmp_path, redis_url, own_databases):
    c = Cluster(tmp_path, redis_url, worker_web=True, worker_overrides={"env_a": NOTES, "env_b": NOTES})
    try:
        c.start()
        wait_for(lambda: {c.status_of("env_a"), c.status_of("env_b")} == {"online"}, what="registration")
        created = c.api("POST", "apps/", json={"name": APP, "environments": ["env_a"], "admin_username": "boss",
                                               "admin_password": PASSWORD})
        assert created.status_code == 201, created.text
        started = c.api("POST", f"apps/{APP}/start")
        assert started.status_code == 200, started.text
        yield c
    finally:
        c.stop()


def write_notes(cluster, session, titles):
    token = session.cookies.get(f"csrftoken_{APP}", path=f"/apps/{APP}/")
    for title in titles:
        created = session.post(f"{cluster.base}/apps/{APP}/api/notes/", json={"title": title},
                               headers={"Origin": cluster.base, "X-CSRFToken": token}, timeout=30)
        assert created.status_code == 201, created.text


def note_titles(cluster, session):
    listed = session.get(f"{cluster.base}/apps/{APP}/api/notes/", timeout=30)
    assert listed.status_code == 200, listed.text
    return sorted(note["title"] for note in listed.json()["notes"])


def test_notes_written_on_env_a_are_all_served_from_env_b_once_env_a_is_gone(cluster):
    session = logged_in(cluster.base, APP)
    titles = [f"note {n}" for n in range(5)]
    write_notes(cluster, session, titles)

    moved = cluster.api("POST", f"apps/{APP}/move", json={"from": "env_a", "to": "env_b"})
    assert moved.status_code == 200, moved.text
    body = moved.json()
    assert body["move"]["state"] == "done" and body["move"]["error"] is None, body
    assert len(body["move"]["sha256"]) == 64 and body["move"]["size"] > 0
    assert body["app"]["environments"] == ["env_b"]
    assert body["app"]["statuses"]["env_b"]["state"] == "running"

    # The login session lives in the application's database: it moved too.
    assert note_titles(cluster, session) == titles

    # env_a's processes stopped for good: crm answers from env_b.
    cluster.webs["env_a"].stop()
    cluster.agents["env_a"].stop()
    page = session.get(f"{cluster.base}/apps/{APP}/", timeout=30)
    assert page.status_code == 200
    assert note_titles(cluster, session) == titles
    write_notes(cluster, session, ["after the move"])
    assert "after the move" in note_titles(cluster, session)


def test_a_move_that_cannot_be_is_refused_naming_why_and_the_app_stays(cluster):
    again = cluster.api("POST", f"apps/{APP}/move", json={"from": "env_a", "to": "env_a"})
    assert again.status_code == 400 and again.json()["environment"] == "env_a"
    nowhere = cluster.api("POST", f"apps/{APP}/move", json={"from": "env_a", "to": "env_z"})
    assert nowhere.status_code == 400 and "env_z" in nowhere.json()["error"]
    not_there = cluster.api("POST", f"apps/{APP}/move", json={"from": "env_b", "to": "env_a"})
    assert not_there.status_code == 400 and "not placed on env_b" in not_there.json()["error"]
    bad = cluster.api("POST", f"apps/{APP}/move", json={"from": "env_a"})
    assert bad.status_code == 400 and "to" in bad.json()["errors"]

    # The destination offline: refused before anything is done.
    cluster.agents["env_b"].stop()
    wait_for(lambda: cluster.status_of("env_b") == "offline", what="env_b offline")
    offline = cluster.api("POST", f"apps/{APP}/move", json={"from": "env_a", "to": "env_b"})
    assert offline.status_code == 400 and "offline" in offline.json()["error"], offline.text
    app = cluster.api("GET", f"apps/{APP}/").json()
    assert app["environments"] == ["env_a"] and app["statuses"]["env_a"]["state"] == "running"


def test_a_move_failing_on_the_destination_leaves_the_app_serving_and_writable_where_it_was(cluster):
    if postgres_env("x"):
        pytest.skip("the failure is made with a SQLite path; the PostgreSQL run shares one server")
    session = logged_in(cluster.base, APP)
    write_notes(cluster, session, ["before"])
    # Where env_b would restore crm's database there is a directory: the load fails there.
    (cluster.tmp / "env_b" / "apps" / f"{APP}.sqlite3").mkdir(parents=True)

    failed = cluster.api("POST", f"apps/{APP}/move", json={"from": "env_a", "to": "env_b"})
    assert failed.status_code == 409, failed.text
    assert failed.json()["step"] == "load" and failed.json()["environment"] == "env_b"
    assert "still runs on env_a" in failed.json()["error"]

    app = cluster.api("GET", f"apps/{APP}/").json()
    assert app["environments"] == ["env_a"] and app["statuses"]["env_a"]["state"] == "running"
    write_notes(cluster, session, ["after the failed move"])  # writes are taken again
    assert note_titles(cluster, session) == ["after the failed move", "before"]


def fill(cluster, megabytes):
    """About MEGABYTES of notes in crm's database on env_a, written straight into it (SQLite) or through its
    server (PostgreSQL)."""
    rows = [(f"bulk {n}", secrets.token_hex(2000)) for n in range(megabytes * 256)]  # 4,000 bytes each
    sql = "INSERT INTO notes_note (title, body, created_at, updated_at) VALUES ({0}, {0}, {1}, {1})"
    if postgres_env("x"):
        import psycopg

        db = postgres_env(f"app_{APP}")
        with psycopg.connect(host=db["DB_HOST"], port=db["DB_PORT"], user=db["DB_USER"],
                             password=db["DB_PASSWORD"] or None, dbname=f"app_{APP}") as conn:
            conn.cursor().executemany(sql.format("%s", "now()"), rows)
        return
    with sqlite3.connect(cluster.tmp / "env_a" / "apps" / f"{APP}.sqlite3") as conn:
        conn.executemany(sql.format("?", "datetime('now')"), rows)


class Traffic:
    """Clients reading and writing crm through the supervisor's proxy until stopped, every answer kept with its
    time: what a move costs them."""

    def __init__(self, cluster, session):
        self.cluster, self.session, self.done = cluster, session, threading.Event()
        self.reads, self.writes, self.written = [], [], []
        self.token = session.cookies.get(f"csrftoken_{APP}", path=f"/apps/{APP}/")
        self.threads = [threading.Thread(target=self.read), threading.Thread(target=self.write)]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        for thread in self.threads:
            thread.join(30)

    def read(self):
        while not self.done.is_set():
            began = time.monotonic()
            try:
                code = self.session.get(f"{self.cluster.base}/apps/{APP}/api/notes/?q=live", timeout=30).status_code
            except requests.RequestException:
                code = 0
            self.reads.append((began, time.monotonic(), code))

    def write(self):
        n = 0
        while not self.done.is_set():
            began, title = time.monotonic(), f"live {n}"
            try:
                code = self.session.post(f"{self.cluster.base}/apps/{APP}/api/notes/", json={"title": title},
                                         headers={"Origin": self.cluster.base, "X-CSRFToken": self.token},
                                         timeout=30).status_code
            except requests.RequestException:
                code = 0
            self.writes.append((began, time.monotonic(), code))
            if code == 201:
                self.written.append(title)
            n += 1
            time.sleep(0.02)


def window(answers, ok):
    """(how many answers were not OK, seconds from the first such request's start to the last one's end)."""
    failed = [(began, ended) for began, ended, code in answers if code != ok]
    return len(failed), (max(e for _, e in failed) - min(b for b, _ in failed)) if failed else 0.0


def test_what_a_move_of_a_10_mb_application_costs_its_clients(cluster):
    session = logged_in(cluster.base, APP)
    fill(cluster, 10)
    with Traffic(cluster, session) as traffic:
        time.sleep(2)
        began = time.monotonic()
        moved = cluster.api("POST", f"apps/{APP}/move", json={"from": "env_a", "to": "env_b"})
        seconds = time.monotonic() - began
        time.sleep(2)
    assert moved.status_code == 200, moved.text
    failed_reads, read_gap = window(traffic.reads, 200)
    refused_writes, write_gap = window(traffic.writes, 201)
    print(f"\nmove of {moved.json()['move']['size'] / 1e6:.1f} MB ({'PostgreSQL' if postgres_env('x') else 'SQLite'}): "
          f"{seconds:.2f} s; reads: {failed_reads} failed of {len(traffic.reads)} ({read_gap:.2f} s); "
          f"writes: {refused_writes} refused of {len(traffic.writes)} (503 for {write_gap:.2f} s)")
    assert failed_reads == 0  # reads are served from the source until the switch, then from the destination
    assert {code for _, _, code in traffic.writes} <= {201, 503}
    # Every write that was answered 201 is there after the move: none was lost.
    listed = session.get(f"{cluster.base}/apps/{APP}/api/notes/?q=live", timeout=30).json()
    assert listed["count"] == len(traffic.written)
