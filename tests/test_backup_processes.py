"""Backups, restores and clones of an application with its notes, end to end (apps.backups): real processes
(supervisor web and controller, two worker webs and agents with the sample notes app), real Redis, real HTTP through
the supervisor's proxy. Each environment and the supervisor have their own storage: backups are stored under the
supervisor's, off every environment."""

import contextlib
import secrets
import signal
import sqlite3
import threading
import time

import pytest
import requests

from .local_cluster import Cluster
from .processes import own_postgres_databases, postgres_env, wait_for
from .test_hosted_code_processes import PASSWORD, csrf, logged_in

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# On PostgreSQL hosted databases (app_<name>) are shared by every run on the server: names of this file's own.
APP = "bkcrm" if postgres_env("x") else "crm"
CLONE = "bkclone"
NOTES = {"APP_HOSTED_APPS": "samples.notes", "APP_HOSTED_URLCONF": "samples.notes.urls"}
# On PostgreSQL, the supervisor's and the workers' own databases: of this file alone, so that another cluster test
# running on the same server at the same time neither drops them nor mirrors its environments into them.
DATABASES = ["appsup_bk_sup", "appsup_bk_env_a", "appsup_bk_env_b"]


@pytest.fixture
def own_databases():
    with own_postgres_databases(DATABASES + [f"app_{APP}", f"app_{CLONE}", f"app_{CLONE}2"]):
        yield


@contextlib.contextmanager
def started_cluster(tmp_path, redis_url, **supervisor):
    """The cluster with APP created and started on env_a; stopped after, whatever failed."""
    c = Cluster(tmp_path, redis_url, worker_web=True, worker_overrides={"env_a": NOTES, "env_b": NOTES},
                supervisor_overrides=supervisor, databases=DATABASES)
    try:
        c.start()
        yield setup(c)
    finally:
        c.stop()


def setup(c):
    wait_for(lambda: {c.status_of("env_a"), c.status_of("env_b")} == {"online"}, what="registration")
    created = c.api("POST", "apps/", json={"name": APP, "environments": ["env_a"], "admin_username": "boss",
                                           "admin_password": PASSWORD})
    assert created.status_code == 201, created.text
    started = c.api("POST", f"apps/{APP}/start")
    assert started.status_code == 200, started.text
    return c


@pytest.fixture
def cluster(tmp_path, redis_url, own_databases):
    with started_cluster(tmp_path, redis_url) as c:
        yield c


def login(cluster, app, username, password):
    session = requests.Session()
    url = f"{cluster.base}/apps/{app}/admin/login/?next=/apps/{app}/"
    page = session.get(url, timeout=30)
    done = session.post(url, data={"csrfmiddlewaretoken": csrf(page), "username": username, "password": password,
                                   "next": f"/apps/{app}/"},
                        headers={"Origin": cluster.base, "Referer": url}, allow_redirects=False, timeout=30)
    return session, done


def write_notes(cluster, session, titles, app=APP):
    token = session.cookies.get(f"csrftoken_{app}", path=f"/apps/{app}/")
    for title in titles:
        created = session.post(f"{cluster.base}/apps/{app}/api/notes/", json={"title": title},
                               headers={"Origin": cluster.base, "X-CSRFToken": token}, timeout=30)
        assert created.status_code == 201, created.text


def note_titles(cluster, session, app=APP):
    listed = session.get(f"{cluster.base}/apps/{app}/api/notes/", timeout=30)
    assert listed.status_code == 200, listed.text
    return sorted(note["title"] for note in listed.json()["notes"])


def backup(cluster, app=APP):
    taken = cluster.api("POST", f"apps/{app}/backups")
    assert taken.status_code == 201, taken.text
    return taken.json()


def stored(cluster):
    """The files in the supervisor's backup storage (APP_STORAGE_DIR/backups)."""
    return [p for p in (cluster.tmp / "supervisor" / "backups").rglob("*") if p.is_file()]


FIVE = [f"note {n}" for n in range(5)]


def test_a_restore_brings_back_the_backups_notes_and_a_backup_altered_by_one_byte_is_refused(cluster):
    session = logged_in(cluster.base, APP)
    write_notes(cluster, session, FIVE)
    first = backup(cluster)
    assert first["app"] == APP and first["environment"] == "env_a" and first["size"] > 0
    assert len(first["sha256"]) == 64 and first["kind"] == "manual"
    downloaded = cluster.api("GET", f"apps/{APP}/backups/{first['id']}")
    assert downloaded.status_code == 200 and len(downloaded.content) == first["size"]
    write_notes(cluster, session, ["six", "seven", "eight"])
    second = backup(cluster)
    listed = cluster.api("GET", f"apps/{APP}/backups").json()["backups"]
    assert [b["id"] for b in listed] == [second["id"], first["id"]]
    assert all(b["size"] > 0 and len(b["sha256"]) == 64 for b in listed)

    # One byte of the newest backup changed in the storage: refused, nothing done, the application untouched.
    path = next(p for p in stored(cluster) if _sha(p) == second["sha256"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    refused = cluster.api("POST", f"apps/{APP}/restore", json={"backup": second["id"]})
    assert refused.status_code == 409, refused.text
    assert "damaged" in refused.json()["error"] and "nothing was restored" in refused.json()["error"]
    app = cluster.api("GET", f"apps/{APP}/").json()
    assert app["statuses"]["env_a"]["state"] == "running"
    assert len(note_titles(cluster, session)) == 8

    restored = cluster.api("POST", f"apps/{APP}/restore", json={"backup": first["id"]})
    assert restored.status_code == 200, restored.text
    body = restored.json()
    assert body["restore"]["environments"] == ["env_a"] and body["restore"]["safety_backup"]
    assert body["app"]["statuses"]["env_a"]["state"] == "running"
    assert note_titles(cluster, session) == FIVE  # the session was in the backup too
    kinds = {b["id"]: b["kind"] for b in cluster.api("GET", f"apps/{APP}/backups").json()["backups"]}
    assert kinds[body["restore"]["safety_backup"]] == "safety"

    # The safety backup has the eight notes: restoring it brings them back.
    again = cluster.api("POST", f"apps/{APP}/restore", json={"backup": body["restore"]["safety_backup"]})
    assert again.status_code == 200, again.text
    assert len(note_titles(cluster, session)) == 8


def _sha(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_clone_has_the_notes_and_its_own_admin_account_and_changes_apart_from_the_original(cluster):
    session = logged_in(cluster.base, APP)
    write_notes(cluster, session, FIVE)
    created = cluster.api("POST", "apps/", json={"name": CLONE, "environments": ["env_b"], "clone_of": APP,
                                                 "admin_username": "clara", "admin_password": "clone-pass-12345"})
    assert created.status_code == 201, created.text
    started = cluster.api("POST", f"apps/{CLONE}/start")
    assert started.status_code == 200, started.text

    # The original's session cookie is scoped to its own path and its sessions were not carried over.
    assert session.get(f"{cluster.base}/apps/{CLONE}/api/notes/", allow_redirects=False, timeout=30).status_code \
        in (302, 401, 403)
    clone_session, done = login(cluster, CLONE, "clara", "clone-pass-12345")
    assert done.status_code == 302, done.text[:1000]
    assert note_titles(cluster, clone_session, CLONE) == FIVE
    # The original's admin password does not open the clone as clara; clara does not exist in the original.
    assert login(cluster, APP, "clara", "clone-pass-12345")[1].status_code == 200

    write_notes(cluster, clone_session, ["only in the clone"], app=CLONE)
    assert "only in the clone" in note_titles(cluster, clone_session, CLONE)
    assert note_titles(cluster, session) == FIVE

    # From a backup id, too.
    first = backup(cluster)
    from_backup = cluster.api("POST", "apps/", json={"name": f"{CLONE}2", "environments": ["env_a"],
                                                     "from_backup": first["id"], "admin_username": "boss",
                                                     "admin_password": "another-pass-12345"})
    assert from_backup.status_code == 201, from_backup.text
    assert cluster.api("POST", f"apps/{CLONE}2/start").status_code == 200
    second_session, done = login(cluster, f"{CLONE}2", "boss", "another-pass-12345")
    assert done.status_code == 302  # its own password for "boss", not the original's
    assert note_titles(cluster, second_session, f"{CLONE}2") == FIVE


def test_with_env_a_gone_for_good_its_last_backup_restored_onto_env_b_serves_the_notes(cluster):
    session = logged_in(cluster.base, APP)
    write_notes(cluster, session, FIVE)
    last = backup(cluster)
    cluster.webs["env_a"].signal(signal.SIGKILL)
    cluster.agents["env_a"].signal(signal.SIGKILL)
    wait_for(lambda: cluster.status_of("env_a") == "offline", timeout=30, what="env_a offline")

    nowhere = cluster.api("POST", f"apps/{APP}/restore", json={"backup": last["id"]})
    assert nowhere.status_code == 409 and "env_a" in nowhere.json()["error"], nowhere.text
    restored = cluster.api("POST", f"apps/{APP}/restore", json={"backup": last["id"], "environment": "env_b"})
    assert restored.status_code == 200, restored.text
    body = restored.json()
    assert body["app"]["environments"] == ["env_b"] and body["restore"]["safety_backup"] is None
    assert body["app"]["statuses"]["env_b"]["state"] == "running"
    assert note_titles(cluster, session) == FIVE
    write_notes(cluster, session, ["on env_b"])
    assert "on env_b" in note_titles(cluster, session)


def fill(cluster, megabytes):
    """About MEGABYTES of notes in the application's database on env_a, written straight into it."""
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


def test_an_agent_killed_mid_backup_leaves_no_backup_listed(cluster):
    fill(cluster, 40)
    answers = []
    worker = threading.Thread(target=lambda: answers.append(cluster.api("POST", f"apps/{APP}/backups?timeout=40")))
    worker.start()
    # Killed once it is dumping: the dump's transfer appears in Redis (or, very fast, within a moment of the call).
    import redis as redis_lib

    r = redis_lib.Redis.from_url(cluster.supervisor_env["APP_COMMAND_REDIS_URL"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not r.keys("appsup:transfer:backup-*"):
        time.sleep(0.02)
    cluster.agents["env_a"].signal(signal.SIGKILL)
    worker.join(60)
    assert answers and answers[0].status_code in (409, 504), answers and answers[0].text
    assert cluster.api("GET", f"apps/{APP}/backups").json()["backups"] == []
    assert stored(cluster) == []


def test_a_transfer_deleted_in_redis_while_the_supervisor_reads_it_never_gives_a_damaged_backup(cluster):
    """Someone with access to Redis (no key needed: chunks are not signed) deletes the dump's list while the agent
    pushes it and the supervisor follows it: the backup is refused, or, deleted after the last chunk was read, is
    the agent's bytes; never a listed backup whose stored bytes are not its checksum."""
    import hashlib

    import redis as redis_lib

    fill(cluster, 40)
    r = redis_lib.Redis.from_url(cluster.supervisor_env["APP_COMMAND_REDIS_URL"])
    answers = []
    worker = threading.Thread(target=lambda: answers.append(cluster.api("POST", f"apps/{APP}/backups?timeout=60")))
    worker.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (keys := r.keys("appsup:transfer:backup-*")):
        time.sleep(0.005)
    assert keys, "the dump's transfer never appeared in Redis"
    r.delete(*keys)
    worker.join(90)
    assert answers, "the backup call did not answer"
    listed = cluster.api("GET", f"apps/{APP}/backups").json()["backups"]
    if answers[0].status_code == 201:
        [backup] = listed
        [path] = stored(cluster)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == backup["sha256"]
    else:
        assert answers[0].status_code == 409 and "did not arrive whole" in answers[0].json()["error"], answers[0].text
        assert listed == [] and stored(cluster) == []
    assert not r.keys("appsup:transfer:backup-*")  # nothing left in Redis either way
    again = cluster.api("POST", f"apps/{APP}/backups?timeout=60")  # and the next one is whole
    assert again.status_code == 201, again.text


@pytest.fixture
def scheduled_cluster(tmp_path, redis_url, own_databases):
    with started_cluster(tmp_path, redis_url, APP_BACKUP_SCHEDULE="* * * * *") as c:
        yield c


def test_with_two_controllers_a_scheduled_backup_runs_once_per_slot(scheduled_cluster):
    cluster = scheduled_cluster
    first_controller = cluster.controller
    cluster.start_controller()  # a second runsupervisor: one holds the lease, the other stands by

    def scheduled():
        return [b for b in cluster.api("GET", f"apps/{APP}/backups").json()["backups"] if b["kind"] == "scheduled"]

    wait_for(lambda: len(scheduled()) >= 1, timeout=90, what="the first scheduled backup")
    first = scheduled()[0]
    slot = first["created_at"][:16]  # the minute it was taken in
    # The lease changes hands: the controller that took it is stopped, the other takes over within the same slot.
    first_controller.stop()
    time.sleep(8)
    same_slot = [b for b in scheduled() if b["created_at"][:16] == slot]
    assert len(same_slot) == 1, scheduled()
    wait_for(lambda: len(scheduled()) >= 2, timeout=90, what="the next slot's scheduled backup")
    minutes = [b["created_at"][:16] for b in scheduled()]
    assert len(minutes) == len(set(minutes)), minutes
