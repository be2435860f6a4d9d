"""A hosted application's database, dumped and restored engine-native for a move (docs/architecture.md, "Moving an
application"): PostgreSQL with ``pg_dump`` (custom format) and ``pg_restore``; SQLite with its online backup API
(``sqlite3.Connection.backup``), which copies a consistent database while the application keeps serving. The bytes
travel through Redis (exchange.transfer), checked by SHA-256 before anything is restored.
"""

import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from pathlib import Path

from django.conf import settings

from exchange import contract, transfer

from . import provisioning

# pg_dump and pg_restore of a database must end within this (a command's own work ends within 600 s).
TOOL_TIMEOUT = 500


class TransferError(Exception):
    pass


def engine():
    return contract.POSTGRES_ENGINE if provisioning._is_postgres() else contract.SQLITE_ENGINE


def _pg_env():
    db = settings.DATABASES["default"]
    env = dict(os.environ)
    for var, key in (("PGHOST", "HOST"), ("PGPORT", "PORT"), ("PGUSER", "USER"), ("PGPASSWORD", "PASSWORD")):
        if db.get(key):
            env[var] = str(db[key])
    return env


def _run(args):
    try:
        done = subprocess.run(args, env=_pg_env(), capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    except FileNotFoundError as exc:
        raise TransferError(f"{args[0]} is not installed on this worker (the PostgreSQL client tools are needed "
                            "to move an application)") from exc
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        # pg_restore ends with the statement that failed; the line saying why comes before it.
        detail = next((line for line in lines if "error" in line.lower()), lines[-1] if lines else "no output")
        raise TransferError(f"{args[0]} failed (exit {done.returncode}): {detail.strip()}")


def dump_to(app, path):
    """Write APP's database to the file PATH, engine-native."""
    if not provisioning.database_exists(app):
        raise TransferError(f"{app} has no database on this environment to dump (it was never started here)")
    if engine() == contract.POSTGRES_ENGINE:
        _run(["pg_dump", "--format=custom", "--no-owner", "--no-acl", f"--file={path}",
              f"--dbname={provisioning.alias(app)}"])
        return
    # Read-only: a dump never creates or changes the source.
    source = sqlite3.connect(f"file:{provisioning.sqlite_path(app)}?mode=ro", uri=True, timeout=20)
    target = sqlite3.connect(path)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


def restore_from(app, path):
    """Make APP's database here the one in the dump file PATH (a database of that name left here is replaced); a
    SQLite dump is moved into place, so PATH must be in scratch_dir(APP)."""
    provisioning.disconnect(app)
    if engine() == contract.POSTGRES_ENGINE:
        provisioning.drop_database(app)
        provisioning.create_database(app)
        _run(["pg_restore", "--no-owner", "--no-acl", "--exit-on-error", f"--dbname={provisioning.alias(app)}",
              str(path)])
        return
    # The dump is a whole database file beside it (scratch_dir): renamed into place, where copying it page by page
    # took longer than all the rest of the load. No connection is open to the old file across this: the application
    # is stopped here (a restore stops it first; a move or a clone loads where it has not started), and hosted
    # connections close at the end of each request. Its old journal goes first: it would be rolled into the new file.
    target_path = provisioning.sqlite_path(app)
    for suffix in ("-journal", "-wal", "-shm"):
        target_path.with_name(target_path.name + suffix).unlink(missing_ok=True)
    os.replace(path, target_path)


LOAD_SCRATCH = ".load-"  # the prefix of a load's scratch directory, beside the applications' SQLite files


def sweep_scratch():
    """Delete load scratch directories left by an agent killed mid-load (each holds up to a whole dump); run when the
    agent starts, when no load of its own is under way. Returns how many."""
    directory = Path(settings.APP_STORAGE_DIR) / "apps"
    left = sorted(directory.glob(f"{LOAD_SCRATCH}*")) if directory.is_dir() else []
    for path in left:
        shutil.rmtree(path, ignore_errors=True)
    return len(left)


def scratch_dir(app):
    """Where a dump of APP is read to before it is restored: beside its SQLite file, so that restoring it is a rename;
    the system's temporary directory for PostgreSQL."""
    if engine() == contract.POSTGRES_ENGINE:
        return None
    directory = provisioning.sqlite_path(app).parent
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def database_place(app):
    """Which database APP's is, as seen from here: two environments on one PostgreSQL server (or one SQLite file)
    share it, and a move between them must neither restore it over itself nor drop it as the source's."""
    if engine() == contract.POSTGRES_ENGINE:
        with provisioning._server_connection() as conn:
            try:
                server = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0]
            except Exception:  # not allowed to this role: the address names the server well enough
                server = f"{conn.info.host}:{conn.info.port}"
        return f"postgresql:{server}/{provisioning.alias(app)}"
    return f"sqlite:{socket.gethostname()}:{provisioning.sqlite_path(app).resolve()}"


def dump(app, transfer_id, redis):
    """Dump APP's database into the transfer TRANSFER_ID; returns ``{"engine", "place", "sha256", "size",
    "chunks"}``."""
    with tempfile.TemporaryDirectory(prefix=f"appsup-dump-{app}-") as scratch:
        path = Path(scratch) / "dump"
        dump_to(app, path)
        sent = transfer.upload(redis, transfer_id, path)
    return dict(sent, engine=engine(), place=database_place(app))


def load(app, manifest, redis):
    """Restore APP's database from the transfer MANIFEST names (``{"transfer", "engine", "place", "sha256", "size",
    "chunks"}``, as ``dump`` answered it). Nothing here is touched unless every byte checks out. Returns ``{"size",
    "sha256", "shared"}``; ``shared``: the source's database is this environment's (one server), left as it is."""
    if manifest.get("engine") != engine():
        raise TransferError(f"the dump is of a {manifest.get('engine')} database and this environment's databases "
                            f"are {engine()}: a move goes between environments of the same engine")
    for field in ("transfer", "sha256"):
        if not isinstance(manifest.get(field), str):
            raise TransferError(f"the load names no {field}")
    for field in ("size", "chunks"):
        if not isinstance(manifest.get(field), int):
            raise TransferError(f"the load names no {field}")
    with tempfile.TemporaryDirectory(prefix=f"{LOAD_SCRATCH}{app}-", dir=scratch_dir(app)) as scratch:
        path = Path(scratch) / "dump"
        transfer.download(redis, manifest["transfer"], path, manifest["sha256"], manifest["size"],
                          manifest["chunks"])
        shared = manifest.get("place") == database_place(app)
        if not shared:
            restore_from(app, path)
    return {"size": manifest["size"], "sha256": manifest["sha256"], "shared": shared}
