"""Application data (issue 20's figures): backup and restore throughput of a big application against the engine's own
tool run by hand, and the time of a fleet upgrade of many applications over two environments.

The cluster is SQLite (``python -m cluster``): a backup is the agent's online backup (SQLite's backup API) sent
through Redis and stored by the supervisor, checked against its SHA-256; by hand it is ``sqlite3 FILE ".backup
COPY"``. A restore through the API takes a safety backup first, then stops, loads and starts (migrations): by hand
it is ``sqlite3 FILE ".restore COPY"``, and, doing what the restore does for its safety, ``.backup`` of the file
before that ``.restore``. Both are run in turn, A B A B, on the same file. With ``--postgres`` the same again on a
cluster whose databases are on PostgreSQL (``bin/cluster --postgres``), against ``pg_dump --format=custom`` and
``pg_restore --clean`` of the application's database, run by hand with the agent's options."""

import os
import sqlite3
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from .cluster import Cluster

FILL_TABLE = "bench_fill"
# The migration rolled back in each application of the fleet figure: a leaf (nothing applied depends on it) whose
# re-application is safe on the data (an AlterField of choices).
MIGRATION = ("admin", "0003_logentry_add_action_flag_choices")


APP = "bdata"
# --postgres: a second cluster, its databases on the local PostgreSQL server (bin/cluster --postgres), named so.
POSTGRES_PREFIX = "appsup_bench_data"
POSTGRES_URL = f"postgresql://postgres@127.0.0.1:5432/{POSTGRES_PREFIX}"


def measure(cluster, quick, postgres=False):
    figures = {"backup": backup_restore(cluster, quick), "upgrade": fleet_upgrade(cluster, quick)}
    if postgres:
        figures["postgres"] = on_postgres(quick)
    return figures


def on_postgres(quick):
    """backup_restore on a cluster of one environment whose databases are on PostgreSQL, against pg_dump and
    pg_restore run by hand with the agent's options; its databases dropped after."""
    with tempfile.TemporaryDirectory(prefix="bench-data-pg-") as storage:
        cluster = Cluster(storage, envs=1, args=["--postgres", POSTGRES_URL])
        try:
            cluster.start()
            return backup_restore(cluster, quick, PostgresApp(APP))
        finally:
            cluster.stop()
            with _postgres_admin() as admin:
                for name in (f"{POSTGRES_PREFIX}_supervisor", f"{POSTGRES_PREFIX}_env_a", f"app_{APP}"):
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _postgres_admin(dbname="postgres"):
    import psycopg

    return psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname=dbname, autocommit=True)


def database_file(cluster, name):
    return cluster.storage / "workers" / "apps" / f"{name}.sqlite3"


def fill(path, megabytes):
    """Grow the application's database at PATH by MEGABYTES of incompressible rows, as a busy application's data."""
    with sqlite3.connect(path) as db:
        db.execute(f"CREATE TABLE IF NOT EXISTS {FILL_TABLE} (id INTEGER PRIMARY KEY, data BLOB)")
        for _ in range(megabytes):
            db.execute(f"INSERT INTO {FILL_TABLE} (data) VALUES (?)", [os.urandom(1024 * 1024)])
    db.close()


def timed(run):
    began = time.perf_counter()
    result = run()
    return time.perf_counter() - began, result


def by_hand(*args):
    done = subprocess.run(["sqlite3", *args], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"sqlite3 {' '.join(args)}: {done.stderr.strip()}")


class SqliteApp:
    """The application's database as a SQLite file, and sqlite3 by hand."""

    engine = "SQLite"
    tools = ("`sqlite3 .backup`", "`sqlite3 .restore`")

    def __init__(self, cluster, name):
        self.path = database_file(cluster, name)

    def fill(self, megabytes):
        fill(self.path, megabytes)

    def size(self):
        return self.path.stat().st_size

    def dump(self, copy):
        by_hand(str(self.path), f".backup '{copy}'")

    def restore(self, copy):
        by_hand(str(self.path), f".restore '{copy}'")


class PostgresApp:
    """The application's PostgreSQL database app_<name>, and pg_dump / pg_restore by hand with the options the
    agent runs them with (workers.transfer)."""

    engine = "PostgreSQL"
    tools = ("`pg_dump --format=custom`", "`pg_restore`")

    def __init__(self, name):
        self.database = f"app_{name}"

    def fill(self, megabytes):
        with _postgres_admin(self.database) as db:
            db.execute(f"CREATE TABLE IF NOT EXISTS {FILL_TABLE} (id serial PRIMARY KEY, data bytea)")
            for _ in range(megabytes):
                db.execute(f"INSERT INTO {FILL_TABLE} (data) VALUES (%s)", [os.urandom(1024 * 1024)])

    def size(self):
        with _postgres_admin() as db:
            return db.execute("SELECT pg_database_size(%s)", [self.database]).fetchone()[0]

    def _tool(self, *args):
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=600,
                              env=dict(os.environ, PGHOST="127.0.0.1", PGPORT="5432", PGUSER="postgres"))
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()[:300]}")

    def dump(self, copy):
        self._tool("pg_dump", "--format=custom", "--no-owner", "--no-acl", f"--file={copy}", f"--dbname={self.database}")

    def restore(self, copy):
        self._tool("pg_restore", "--clean", "--if-exists", "--no-owner", "--no-acl", "--exit-on-error",
                   f"--dbname={self.database}", str(copy))


def backup_restore(cluster, quick, database=None):
    megabytes, rounds = (20, 1) if quick else (100, 3)
    name = APP
    cluster.create_app(name, ["env_a"])
    cluster.command(name, "start")
    database = database or SqliteApp(cluster, name)
    database.fill(megabytes)
    size = database.size()
    ours_backup, hand_backup, ours_restore, hand_restore, hand_safe_restore = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-backup-") as scratch:
        copy, safety = Path(scratch) / "copy.dump", Path(scratch) / "safety.dump"
        for _ in range(rounds):
            seconds, answer = timed(lambda: cluster.api("POST", f"apps/{name}/backups", params={"timeout": 600}))
            if answer.status_code != 201:
                raise RuntimeError(f"backup of {name}: {answer.status_code} {answer.text[:300]}")
            if answer.json()["size"] < megabytes * 1024 * 1024:
                raise RuntimeError(f"backup of {name}: {answer.json()['size']} bytes, smaller than its data")
            ours_backup.append(seconds)
            backup_id = answer.json()["id"]

            hand_backup.append(timed(lambda: database.dump(copy))[0])

            seconds, answer = timed(lambda: cluster.api("POST", f"apps/{name}/restore", json={"backup": backup_id},
                                                        params={"timeout": 600}))
            if answer.status_code != 200:
                raise RuntimeError(f"restore of {name}: {answer.status_code} {answer.text[:300]}")
            ours_restore.append(seconds)

            hand_restore.append(timed(lambda: database.restore(copy))[0])
            hand_safe_restore.append(timed(lambda: (database.dump(safety), database.restore(copy)))[0])
    cluster.command(name, "restart")  # after the restore by hand: served from its own database again
    return {"megabytes": size / 1024 / 1024, "rounds": rounds, "engine": database.engine, "tools": database.tools,
            "ours_backup": statistics.median(ours_backup), "hand_backup": statistics.median(hand_backup),
            "ours_restore": statistics.median(ours_restore), "hand_restore": statistics.median(hand_restore),
            "hand_safe_restore": statistics.median(hand_safe_restore)}


def fleet_upgrade(cluster, quick, timeout=1800):
    """N applications, half on env_a and half on env_b, each with one migration rolled back (as a worker started
    with new code would find them), reported pending; then one ``POST /api/upgrade`` and its time until done."""
    count = 20 if quick else 200
    names = [f"bup{i:03d}" for i in range(count)]
    for i, name in enumerate(names):
        cluster.create_app(name, ["env_a" if i % 2 == 0 else "env_b"])
        cluster.command(name, "start")
    app_label, migration = MIGRATION
    for name in names:
        with sqlite3.connect(database_file(cluster, name)) as db:
            db.execute("DELETE FROM django_migrations WHERE app = ? AND name = ?", [app_label, migration])
        db.close()
        # Any command run inside it makes its agent report what its database lacks.
        ran = cluster.api("POST", f"apps/{name}/command", json={"command": "check"})
        if ran.status_code != 200 or not ran.json()["ok"]:
            raise RuntimeError(f"check in {name}: {ran.status_code} {ran.text[:300]}")
    expected = [f"{app_label}.{migration}"]

    def shown_pending(name):
        return cluster.api("GET", f"apps/{name}/").json()["pending_migrations"] == {
            "env_a" if names.index(name) % 2 == 0 else "env_b": expected}

    deadline = time.monotonic() + 120
    waiting = list(names)
    while waiting:
        waiting = [name for name in waiting if not shown_pending(name)]
        if waiting and time.monotonic() > deadline:
            raise RuntimeError(f"the rolled-back migration was not shown pending on {', '.join(waiting[:5])} …")
        time.sleep(0.5 if waiting else 0)

    began = time.perf_counter()
    asked = cluster.api("POST", "upgrade", json={"apps": names})
    if asked.status_code != 202:
        raise RuntimeError(f"upgrade: {asked.status_code} {asked.text[:300]}")
    answered = time.perf_counter() - began
    upgrade_id = asked.json()["id"]
    while True:
        shown = cluster.api("GET", f"upgrades/{upgrade_id}").json()
        if shown["state"] != "running":
            break
        if time.perf_counter() - began > timeout:
            raise RuntimeError(f"upgrade {upgrade_id} still running after {timeout} s: {shown['done']} done")
        time.sleep(0.2)
    seconds = time.perf_counter() - began
    backed_up = sum(1 for step in shown["steps"] if step["backup"])
    errors = sorted({step["error"] for step in shown["steps"] if step["error"]})
    return {"apps": count, "total": shown["total"], "done": shown["done"], "failed": shown["failed"],
            "seconds": seconds, "answered_ms": answered * 1000, "backed_up": backed_up, "errors": errors}


def rows(figures, quick):
    u = figures["upgrade"]
    fleet_ok = u["done"] == u["total"] == u["apps"] and not u["failed"]
    return [
        *throughput_rows(figures["backup"], quick),
        (f"fleet upgrade of {u['apps']} applications over 2 environments", "half on env_a, half on env_b, each "
         "with one migration rolled back and reported pending; one `POST /api/upgrade`, polled until it ends "
         "(each step a safety backup, then the migration; APP_UPGRADE_CONCURRENCY=2)" + (
             " (20 applications in --quick)" if quick else ""), "(reported); every one migrated",
         f"{u['seconds']:.1f} s ({u['seconds'] / u['apps'] * 1000:.0f} ms per application); {u['done']} of "
         f"{u['total']} migrated, {u['failed']} failed, {u['backed_up']} after a backup; answered 202 in "
         f"{u['answered_ms']:.0f} ms" + (f"; first error: {u['errors'][0][:300]}" if u["errors"] else ""),
         verdict(fleet_ok)),
        *(throughput_rows(figures["postgres"], quick) if "postgres" in figures else []),
    ]


def throughput_rows(b, quick):
    dump_tool, restore_tool = b["tools"]
    how = (f"one application on env_a grown to {b['megabytes']:.0f} MB of incompressible rows ({b['engine']}); "
           f"median of {b['rounds']} alternating rounds" + (" (reduced from 100 MB, 3 rounds, in --quick)"
                                                             if quick else ""))

    def rate(seconds):
        return b["megabytes"] / seconds

    backup_ratio = b["hand_backup"] / b["ours_backup"]
    restore_ratio = b["hand_restore"] / b["ours_restore"]
    safe_ratio = b["hand_safe_restore"] / b["ours_restore"]
    return [
        (f"backup throughput ÷ {dump_tool} by hand", f"{how}: `POST /api/apps/<name>/backups` (the agent's "
         f"engine-native dump, sent through Redis, checked and stored by the supervisor) vs {dump_tool} of the "
         "database by hand", "≥ 0.8", f"{backup_ratio:.2f} ({rate(b['ours_backup']):.0f} vs "
         f"{rate(b['hand_backup']):.0f} MB/s; {b['ours_backup']:.2f} vs {b['hand_backup']:.2f} s)",
         verdict(backup_ratio >= 0.8)),
        (f"restore throughput ÷ {restore_tool} by hand", f"{how}: `POST /api/apps/<name>/restore` (a safety "
         f"backup first, then stop, load, start with migrations) vs {restore_tool} of the dump by hand", "≥ 0.8",
         f"{restore_ratio:.2f} ({rate(b['ours_restore']):.0f} vs {rate(b['hand_restore']):.0f} MB/s; "
         f"{b['ours_restore']:.2f} vs {b['hand_restore']:.2f} s); against {dump_tool} then {restore_tool} by hand "
         f"(a safety copy first, as the restore takes): {safe_ratio:.2f} ({b['hand_safe_restore']:.2f} s)",
         verdict(restore_ratio >= 0.8)),
    ]


def verdict(ok):
    return "pass" if ok else "**FAIL**"
