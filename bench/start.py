"""Figure 3, start time: sequential start of a fresh app on 2 environments, and restart of a migrated one."""

import sqlite3
import statistics


def measure(cluster, quick):
    rounds = 2 if quick else 4
    fresh, restart = [], []
    for i in range(rounds):  # A B A B: a fresh start, then a restart of the app just migrated
        name = f"bstart{i}"
        cluster.create_app(name, ["env_a", "env_b"])
        fresh.append(cluster.command(name, "start"))
        _check_started(cluster, name)
        restart.append(cluster.command(name, "restart"))
    return {"fresh": statistics.median(fresh), "restart": statistics.median(restart),
            "fresh_all": fresh, "restart_all": restart, "rounds": rounds}


def _check_started(cluster, name):
    """The fresh start really created and migrated the app's database, with its superuser, on both environments."""
    statuses = cluster.api("GET", f"apps/{name}/").json()["statuses"]
    states = {env: s["state"] for env, s in statuses.items()}
    if states != {"env_a": "running", "env_b": "running"}:
        raise RuntimeError(f"{name} after start: {states}")
    path = cluster.storage / "workers" / "apps" / f"{name}.sqlite3"
    with sqlite3.connect(path) as db:
        if db.execute("SELECT is_superuser FROM auth_user WHERE username = 'boss'").fetchone() != (1,):
            raise RuntimeError(f"{name}: no superuser in {path}")
