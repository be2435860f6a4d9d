import time

import pytest
import redis as redis_lib

from apps import cache
from apps.models import Application
from exchange import cache as config_cache
from exchange import contract, directory, events, registry, status

from .conftest import free_port
from .factories import create_application, register_environment
from .processes import wait_for

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


# --- Redis lost or unreachable: the last known view -------------------------------------------------------------



def _registration(name, url=None, **extra):
    return dict({"name": name, "url": url or f"http://{name}.test:8000", "proxy_url": "", "version": "1.0.0",
                 "host": "testhost", "pid": 1}, **extra)


def _configure(r, name="crm", environments=("env_a",), state=contract.RUNNING, ready=True):
    """The configuration cache (complete when READY), registrations and statuses, as the supervisor and agents
    write them."""
    entry = {"name": name, "display_name": name.upper(), "environments": list(environments)}
    if ready:
        config_cache.replace_all(r, {name: entry})
    else:
        config_cache.write(r, name, entry)
    for env in environments:
        registry.announce(r, _registration(env))
        if state:
            status.write(r, name, env, state)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def advance(self, seconds=1.0):
        self.now += seconds


class Switchable:
    """The Redis client a Directory reads through, which a test can point at a dead port."""

    def __init__(self, client):
        self.client = client
        self.pipelines = 0

    def __call__(self):
        return self

    def pipeline(self, *args, **kwargs):
        self.pipelines += 1
        return self.client.pipeline(*args, **kwargs)

    def break_(self):
        self.client = redis_lib.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)


def test_redis_unreachable_answers_the_last_known_view(r):
    _configure(r)
    clock, redis = Clock(), Switchable(r)
    d = directory.Directory(ttl=1.0, clock=clock, redis=redis)
    before = d.lookup("crm")
    assert before.statuses["env_a"]["state"] == contract.RUNNING

    redis.break_()
    for _ in range(3):
        clock.advance()
        assert d.lookup("crm") is before


def test_a_hung_redis_costs_a_lookup_a_quarter_of_a_second_once_a_ttl_and_the_last_known_view_is_answered(r, redis_hung):
    from exchange import redis_client

    _configure(r)
    clock, redis = Clock(), Switchable(r)
    d = directory.Directory(ttl=1.0, clock=clock, redis=redis)
    before = d.lookup("crm")

    redis.client = redis_client.lookup_redis()  # what the request path reads through, pointed at a hung Redis
    clock.advance()
    began = time.monotonic()
    assert d.lookup("crm") is before
    assert time.monotonic() - began < 1.0  # not SOCKET_TIMEOUT, and no retries
    began = time.monotonic()
    for _ in range(50):
        assert d.lookup("crm") is before  # within the TTL: not tried again
    assert time.monotonic() - began < 0.1


def test_a_view_read_after_an_outage_says_when_redis_could_not_be_read(r):
    _configure(r)
    clock, redis = Clock(), Switchable(r)
    d = directory.Directory(ttl=1.0, clock=clock, redis=redis)
    assert d.lookup("crm").unread is None
    last_answered = time.time()

    redis.break_()
    clock.advance()
    during = d.lookup("crm")
    assert during.unread is None and during.read_at <= last_answered + 0.1  # judged as of the last read

    redis.client = r
    clock.advance()
    after = d.lookup("crm")
    began, ended = after.unread
    assert began <= last_answered + 0.1 and began < ended <= after.read_at


def test_concurrent_misses_on_a_hung_redis_share_one_read_and_each_waits_at_most_one_lookup_timeout(r, redis_hung):
    import threading

    from exchange import redis_client

    _configure(r)
    clock, redis = Clock(), Switchable(r)
    d = directory.Directory(ttl=1.0, clock=clock, redis=redis)
    before = d.lookup("crm")
    redis.client = redis_client.lookup_redis()
    clock.advance()
    tries = redis.pipelines
    answers, slowest = [], [0.0]

    def request():
        began = time.monotonic()
        answers.append(d.lookup("crm"))
        slowest[0] = max(slowest[0], time.monotonic() - began)

    threads = [threading.Thread(target=request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert answers == [before] * 8
    assert redis.pipelines == tries + 1  # one read of the hung Redis for all eight
    assert slowest[0] < redis_client.LOOKUP_TIMEOUT + 0.2


def test_a_miss_after_a_change_does_not_take_the_answer_of_a_read_begun_before_it(r):
    import threading

    _configure(r)
    d = directory.Directory(ttl=1.0, clock=Clock())
    d.lookup("crm")
    d.invalidate("crm")
    reading, release = threading.Event(), threading.Event()
    real_read, answers = d._read, {}

    def slow_read(name):  # the first read sees "running", then waits while the application is stopped
        view = real_read(name)
        reading.set()
        release.wait(5)
        return view

    d._read = slow_read
    first = threading.Thread(target=lambda: answers.update(first=d.lookup("crm")))
    first.start()
    reading.wait(5)
    d._read = real_read
    status.write(r, "crm", "env_a", contract.STOPPED)
    d.invalidate("crm")  # the stop's event, as the listener handles it
    answers["second"] = d.lookup("crm")
    release.set()
    first.join(5)
    assert answers["first"].statuses["env_a"]["state"] == contract.RUNNING
    assert answers["second"].statuses["env_a"]["state"] == contract.STOPPED


def test_redis_unreachable_is_retried_once_per_ttl_not_per_request(r):
    _configure(r)
    clock, redis = Clock(), Switchable(r)
    d = directory.Directory(ttl=1.0, clock=clock, redis=redis)
    d.lookup("crm")
    redis.break_()
    clock.advance()
    tries = redis.pipelines
    for _ in range(5):
        assert d.lookup("crm") is not None
    assert redis.pipelines == tries + 1
    redis.client = r  # back
    status.write(r, "crm", "env_a", contract.STOPPED)
    clock.advance()
    assert d.lookup("crm").statuses["env_a"]["state"] == contract.STOPPED


def test_redis_unreachable_with_nothing_known_raises(r):
    redis = Switchable(r)
    redis.break_()
    d = directory.Directory(ttl=1.0, clock=Clock(), redis=redis)
    with pytest.raises(redis_lib.RedisError):
        d.lookup("crm")


def test_an_unknown_name_stays_unknown_when_redis_is_unreachable(r):
    config_cache.replace_all(r, {})
    clock, redis = Clock(), Switchable(r)
    d = directory.Directory(ttl=1.0, clock=clock, redis=redis)
    assert d.lookup("nope") is None
    redis.break_()
    clock.advance()
    assert d.lookup("nope") is None  # the last view: no such application


def test_after_flushall_the_last_known_view_is_kept(r):
    _configure(r)
    clock = Clock()
    d = directory.Directory(ttl=1.0, clock=clock)
    before = d.lookup("crm")
    assert before.complete

    r.flushall()
    clock.advance()
    after = d.lookup("crm")
    assert after.config == before.config
    assert after.environments == before.environments and after.statuses == before.statuses
    assert not after.complete


def test_after_flushall_what_is_published_again_is_used_and_what_is_not_yet_is_kept(r):
    _configure(r, environments=("env_a", "env_b"))
    clock = Clock()
    d = directory.Directory(ttl=1.0, clock=clock)
    before = d.lookup("crm")

    r.flushall()
    # The cache is rebuilt first; env_a's agent publishes again, env_b's not yet.
    config_cache.replace_all(r, {"crm": before.config})
    registry.announce(r, _registration("env_a", url="http://moved.test:8000"))
    status.write(r, "crm", "env_a", contract.STOPPED)
    clock.advance()
    after = d.lookup("crm")
    assert after.environments["env_a"]["url"] == "http://moved.test:8000"
    assert after.statuses["env_a"]["state"] == contract.STOPPED
    assert after.environments["env_b"] == before.environments["env_b"]
    assert after.statuses["env_b"] == before.statuses["env_b"]
    assert not after.complete

    registry.announce(r, _registration("env_b"))
    status.write(r, "crm", "env_b", contract.RUNNING)
    clock.advance()
    assert d.lookup("crm").complete


def test_a_new_configuration_written_while_the_cache_is_incomplete_is_used(r):
    _configure(r)
    clock = Clock()
    d = directory.Directory(ttl=1.0, clock=clock)
    d.lookup("crm")
    r.flushall()
    config_cache.write(r, "crm", {"name": "crm", "display_name": "New", "environments": ["env_a"]})
    clock.advance()
    view = d.lookup("crm")
    assert view.config["display_name"] == "New"
    assert view.statuses["env_a"]["state"] == contract.RUNNING  # kept


def test_a_removal_while_the_cache_is_complete_is_a_404_and_forgets_the_last_view(r):
    _configure(r)
    clock = Clock()
    d = directory.Directory(ttl=1.0, clock=clock)
    assert d.lookup("crm") is not None

    config_cache.remove(r, "crm")
    clock.advance()
    assert d.lookup("crm") is None

    r.flushall()  # then a loss: nothing to fall back on, the application is gone
    clock.advance()
    assert d.lookup("crm") is None


@pytest.mark.parametrize("forged", [b"garbage", b'{"name": "env_a", "url": "http://attacker.test"}'])
def test_entries_that_do_not_verify_are_never_used_and_the_last_known_ones_are_kept(r, forged):
    _configure(r)
    clock = Clock()
    d = directory.Directory(ttl=1.0, clock=clock)
    before = d.lookup("crm")

    r.hset(contract.APPS_KEY, "crm", forged)
    r.hset(contract.ENVIRONMENTS_KEY, "env_a", forged)
    r.hset(contract.STATUSES_KEY, contract.status_field("crm", "env_a"), forged)
    clock.advance()
    after = d.lookup("crm")
    assert (after.config, after.environments, after.statuses) == (before.config, before.environments, before.statuses)
    assert not after.complete

    # What the owners write again (the next heartbeat, a real state change) is used at once.
    registry.announce(r, _registration("env_a", url="http://moved.test:8000"))
    status.write(r, "crm", "env_a", contract.STOPPED)
    clock.advance()
    again = d.lookup("crm")
    assert again.environments["env_a"]["url"] == "http://moved.test:8000"
    assert again.statuses["env_a"]["state"] == contract.STOPPED


def test_entries_that_do_not_verify_give_a_fresh_process_nothing(r):
    _configure(r)
    r.hset(contract.ENVIRONMENTS_KEY, "env_a", b'{"name": "env_a", "url": "http://attacker.test"}')
    r.hset(contract.STATUSES_KEY, contract.status_field("crm", "env_a"), b"garbage")
    view = directory.Directory(ttl=1.0, clock=Clock()).lookup("crm")
    assert view.environments == {} and view.statuses == {}

    r.hset(contract.APPS_KEY, "crm", b"garbage")
    assert directory.Directory(ttl=1.0, clock=Clock()).lookup("crm") is None


def test_an_application_never_seen_while_the_cache_is_incomplete_is_none(r):
    d = directory.Directory(ttl=1.0, clock=Clock())
    assert d.lookup("crm") is None


def test_a_view_is_read_in_one_round_trip(r):
    _configure(r, environments=("env_a", "env_b"))
    clock, redis = Clock(), Switchable(r)
    d = directory.Directory(ttl=1.0, clock=clock, redis=redis)
    d.lookup("crm")  # first read: the environments are not known before the configuration
    for _ in range(3):
        clock.advance()
        before = redis.pipelines
        d.lookup("crm")
        assert redis.pipelines == before + 1


def test_an_invalidated_view_is_read_again_but_kept_for_outages(r):
    _configure(r)
    clock, redis = Clock(), Switchable(r)
    d = directory.Directory(ttl=60.0, clock=clock, redis=redis)
    d.lookup("crm")
    status.write(r, "crm", "env_a", contract.STOPPED)
    assert d.lookup("crm").statuses["env_a"]["state"] == contract.RUNNING  # cached
    d.handle_event({"type": "placement", "app": "crm"})
    assert d.lookup("crm").statuses["env_a"]["state"] == contract.STOPPED

    d.handle_event(None)  # (re)subscribed: everything may have changed
    assert d.cached("crm") == (False, None)
    redis.break_()
    assert d.lookup("crm").statuses["env_a"]["state"] == contract.STOPPED  # the last known view


def test_events_for_other_applications_leave_a_view_fresh(r):
    _configure(r)
    d = directory.Directory(ttl=60.0, clock=Clock())
    d.lookup("crm")
    d.handle_event({"type": "placement", "app": "erp"})
    d.handle_event({"type": "app", "name": "erp"})
    assert d.cached("crm")[0]
    d.handle_event({"type": "environment", "name": "env_a"})
    assert not d.cached("crm")[0]


def test_a_read_overlapping_an_event_is_not_kept_as_fresh(r):
    _configure(r)
    d = directory.Directory(ttl=60.0, clock=Clock())

    class Racing(Switchable):
        def pipeline(self, *args, **kwargs):
            d.invalidate("crm")  # the event lands while the read is under way
            return super().pipeline(*args, **kwargs)

    d.redis = Racing(r)
    assert d.lookup("crm") is not None
    assert d.cached("crm") == (False, None)


# --- Events: answers are in force when given --------------------------------------------------------------------


@pytest.fixture
def listening():
    d = directory.Directory(ttl=60.0, listen=True, listen_key=f"test-{time.monotonic_ns()}")
    assert events.wait_subscribed(d.listen())
    yield d
    d.stop_listening()


def test_an_event_handled_while_a_lookup_looks_for_pending_ones_is_not_missed(r, listening, monkeypatch):
    from exchange import sequence, signing

    _configure(r)
    wait_for(lambda: listening.lookup("crm") and listening.cached("crm")[0], what="the configuring events handled")
    assert listening.lookup("crm").statuses["env_a"]["state"] == contract.RUNNING

    # Written as status.write does, but the event is delivered by hand, at the worst moment.
    entry = {"app": "crm", "environment": "env_a", "state": contract.STOPPED, "error": "", "traceback": "",
             "at": time.time(), sequence.KEY: sequence.new()}
    r.hset(contract.STATUSES_KEY, contract.status_field("crm", "env_a"), signing.dumps(entry, signer="env_a"))
    checked = listening._event_pending

    def handled_meanwhile():  # the listener thread runs between the lookup's steps: handled, so nothing pending
        listening.invalidate("crm")
        return checked()

    monkeypatch.setattr(listening, "_event_pending", handled_meanwhile)
    assert listening.lookup("crm").statuses["env_a"]["state"] == contract.STOPPED


def test_a_status_write_is_seen_by_the_next_lookup(r, listening):
    _configure(r)
    assert events.wait_subscribed(listening.listen())
    misses = 0
    for i in range(200):
        state = contract.STOPPED if i % 2 == 0 else contract.RUNNING
        status.write(r, "crm", "env_a", state)
        # The writer is another process in deployment (an agent), and what reaches a lookup after it has been
        # through Redis again (the command's result). Redis answers a later command only once it has written the
        # event to every subscriber's socket; the reply to PUBLISH itself may come first.
        r.ping()
        if listening.lookup("crm").statuses["env_a"]["state"] != state:
            misses += 1
    assert misses == 0


def test_a_configuration_change_and_a_cache_rebuild_are_seen_by_the_next_lookup(r, listening):
    _configure(r)
    assert listening.lookup("crm").config["display_name"] == "CRM"
    config_cache.write(r, "crm", {"name": "crm", "display_name": "Changed", "environments": ["env_a"]})
    events.publish(r, events.APP, name="crm")
    r.ping()  # as in test_a_status_write_is_seen_by_the_next_lookup
    assert listening.lookup("crm").config["display_name"] == "Changed"
    config_cache.replace_all(r, {"crm": {"name": "crm", "display_name": "Rebuilt", "environments": ["env_a"]}})
    events.publish(r, events.CACHE, action="rebuilt")
    r.ping()
    assert listening.lookup("crm").config["display_name"] == "Rebuilt"


def test_once_an_event_is_handled_lookups_are_answered_from_memory_again(r, listening):
    _configure(r)
    reads = []

    class Counting(redis_lib.Redis):
        def pipeline(self, *args, **kwargs):
            reads.append(1)
            return super().pipeline(*args, **kwargs)

    listening.redis = lambda: Counting(connection_pool=r.connection_pool)
    listening.lookup("crm")
    events.publish(r, events.APP, name="crm")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # read again once the event is handled; then fresh until the next one
        listening.lookup("crm")
        if listening.cached("crm")[0]:
            break
        time.sleep(0.01)
    before = len(reads)
    for _ in range(50):
        assert listening.lookup("crm") is not None
    assert len(reads) == before  # from memory: no read of Redis per request while nothing changes


def test_heartbeats_announced_for_live_pages_never_reach_the_directory(r):
    # What the request path must know never changes with a heartbeat alone; delivered, 10,000 of them a burst would
    # make every view stale (and every lookup a Redis read) over and over.
    d = directory.Directory(ttl=60.0, listen=True, listen_key=f"test-{time.monotonic_ns()}")
    handled, real_handle = [], d.handle_event
    d.handle_event = lambda event: (handled.append(event), real_handle(event))
    assert events.wait_subscribed(d.listen())
    beating = f"env-{time.monotonic_ns()}"  # a name nothing else in the suite publishes
    for _ in range(50):
        events.publish(r, events.ENVIRONMENT, channel=contract.HEARTBEATS_CHANNEL, name=beating, status="online",
                       problem=None)
    marker = f"marker-{time.monotonic_ns()}"
    events.publish(r, events.APP, name=marker)  # delivered after everything published before it
    deadline = time.monotonic() + 5
    while not any(e and e.get("name") == marker for e in handled):
        assert time.monotonic() < deadline, "the events channel's marker never arrived"
        time.sleep(0.01)
    d.stop_listening()
    assert not [e for e in handled if e and e.get("name") == beating]


def test_an_environment_event_leaves_fresh_the_views_of_applications_not_placed_there(r):
    _configure(r)
    d = directory.Directory(ttl=60.0)
    d.lookup("crm")
    d.handle_event({"type": events.ENVIRONMENT, "name": "env_other", "status": "online"})
    assert d.cached("crm")[0]
    d.handle_event({"type": events.ENVIRONMENT, "name": "env_a", "status": "offline"})
    assert d.cached("crm") == (False, None)
