"""Builders for test data, going through the same code paths as production (registry, forms)."""

import threading
import time

from rq.timeouts import TimerDeathPenalty

from apps.forms import ApplicationCreateForm
from environments import enrollment
from environments import mirror as registry_mirror
from environments.models import Environment
from exchange import registry
from exchange.redis_client import supervisor_redis
from workers.agent import Agent

from .processes import environment_public_key

PASSWORD = "correct-horse-battery"


def register_environment(name, url=None, proxy_url="", heartbeat_at=None, sync=True):
    """Register NAME in Redis as its worker would, and mirror it into the database."""
    r = supervisor_redis()
    registry.announce(
        r,
        {"name": name, "url": url or f"http://{name}.test:8000", "proxy_url": proxy_url, "version": "1.0.0",
         "host": "testhost", "pid": 1},
        now=heartbeat_at,
    )
    if sync:
        registry_mirror.sync(r)
        enroll_test_key(name, r)


def enroll_test_key(name, r=None):
    """Enroll NAME's test key, as an operator would, and publish it: the supervisor processes a test starts verify
    with the published keys only (this process holds every test key itself)."""
    Environment.objects.filter(name=name, public_keys=[]).update(public_keys=[environment_public_key(name)])
    enrollment.publish(r or supervisor_redis())


def create_application(name, environments, admin_username="admin", password=PASSWORD, display_name=""):
    form = ApplicationCreateForm(
        {"name": name, "display_name": display_name or name.upper(), "environments": list(environments),
         "admin_username": admin_username, "admin_password": password}
    )
    assert form.is_valid(), form.errors
    return form.save()


class ThreadAgent:
    """A real worker agent for ENVIRONMENT, consuming its queue in a thread of the test process.

    Jobs run with a timer-based timeout (signals only work in the main thread). Use as a context manager.
    """

    def __init__(self, name, url=None, interval=60):
        self.agent = Agent(name, url or f"http://{name}.test:8000", "", interval, death_penalty_class=TimerDeathPenalty)
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        from django.db import connections

        try:
            self.agent.register()
            while not self.agent.stop_requested:
                self.agent.heartbeat_if_due()
                self.agent.process_one(timeout=1)
        finally:
            connections.close_all()

    def __enter__(self):
        self.agent.register()
        registry_mirror.sync(supervisor_redis())
        self.thread.start()
        return self.agent

    def __exit__(self, *exc):
        self.agent.request_stop()
        self.thread.join(10)
        self.agent.deregister()
        registry_mirror.sync(supervisor_redis())
        time.sleep(0)


def staff_user(username, *permissions):
    """An active staff user holding PERMISSIONS ("apps.view_application", …), as an administrator grants them."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    user = get_user_model().objects.create_user(username, password=PASSWORD, is_staff=True)
    for name in permissions:
        app_label, codename = name.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return user


def mirror():
    """A controller's pass as pages see it: Redis mirrored into the database, and the controller recorded as
    running (pages warn otherwise)."""
    import redis

    from controller.loop import Controller

    controller = Controller()
    try:
        controller.mirror()
    except redis.RedisError as exc:
        controller.record_health(exc)  # what pages then say about Redis
    else:
        controller.record_health()


def hold_lock(app, ttl=60):
    """Hold APP's lifecycle lock as a genuine holder (another operation in progress); returns the lock."""
    from exchange import contract
    from exchange.locks import SignedLock

    lock = SignedLock(supervisor_redis(), contract.lock_key(app), contract.APP_LOCK, timeout=ttl, thread_local=False)
    assert lock.acquire(blocking=False)
    return lock
