"""A supervisor whose database is given as DATABASE_URL=sqlite:///… (documented beside the DB_* form) takes the
admin's writes while its controller and the workers' reports write to the same file: none fails "database is
locked", as none does with DB_DIALECT=sqlite."""

import threading

import pytest

from .local_cluster import Cluster
from .processes import manage, wait_for
from .test_monitoring_processes import PASSWORD, admin_session

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def cluster(tmp_path, redis_url, own_databases):
    url = f"sqlite:///{tmp_path / 'supervisor' / 'by-url.sqlite3'}"
    c = Cluster(tmp_path, redis_url, worker_web=True, supervisor_overrides={"DATABASE_URL": url})
    try:
        (tmp_path / "supervisor").mkdir(parents=True, exist_ok=True)
        manage(["migrate", "-v0"], c.supervisor_env)
        manage(["ensureadmin", "--username", "ops", "--password", PASSWORD], c.supervisor_env)
        c.start()
        yield c
    finally:
        c.stop()


def test_admin_writes_beside_restarts_on_a_sqlite_database_url_are_never_locked_out(cluster):
    wait_for(lambda: cluster.status_of("env_a") == "online", what="env_a online")
    created = cluster.api("POST", "apps/", json={"name": "shop", "display_name": "Shop", "environments": ["env_a"],
                                                  "admin_username": "boss", "admin_password": PASSWORD})
    assert created.status_code == 201, created.text
    assert cluster.api("POST", "apps/shop/start").status_code == 200

    stop = threading.Event()
    restarts = []

    def restart_loop():
        while not stop.is_set():
            restarts.append(cluster.api("POST", "apps/shop/restart").status_code)

    restarter = threading.Thread(target=restart_loop, daemon=True)
    restarter.start()
    session = admin_session(cluster)
    add = f"{cluster.base}/admin/auth/group/add/"
    failures = []
    try:
        for n in range(40):
            session.get(add, timeout=30)
            answer = session.post(add, data={"name": f"team-{n}", "csrfmiddlewaretoken": session.cookies["csrftoken"]},
                                  headers={"Referer": add}, timeout=30, allow_redirects=False)
            if answer.status_code != 302 or "database is locked" in answer.text:
                failures.append((n, answer.status_code, answer.text[:200]))
    finally:
        stop.set()
        restarter.join(60)
    assert failures == []
    assert restarts and set(restarts) <= {200, 423}, restarts  # the restarts ran beside the writes
    print(f"\n40 admin writes beside {len(restarts)} restarts on DATABASE_URL=sqlite: 0 locked")
