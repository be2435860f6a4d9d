"""What the request path needs to know about one application, read from Redis, never from the supervisor's database.

Used by the worker serving hosted applications and by the supervisor's access proxy on every request, so each
process keeps what it read:

- **fresh** for at most ``TTL`` seconds, and less when an event says it changed: every status write, configuration
  change and cache rebuild is announced on Redis pub/sub (exchange.events), and a ``Directory`` that listens drops
  the named application's freshness (or everyone's) at once. So a stop answers 503 on the very next request, and a
  busy application still costs about one Redis round trip a second, not one per request.
- **last known** for as long as the process runs: Redis is a cache that can be lost (restart without persistence,
  FLUSHALL, failover) or unreachable for a while. Neither fails a request of a running application:

  * Redis unreachable (any ``redis.RedisError``), or hung (no answer within redis_client.LOOKUP_TIMEOUT, a quarter of a
    second, without retries): the last known view is answered, and Redis is tried again a TTL later. Only a process
    that never read the application raises (the callers answer 503). Views read after such an outage say when it
    was (``AppView.unread``): no agent could heartbeat through it either, so its length is not counted against
    their heartbeats (proxy.targets); an outage as long as APP_HEARTBEAT_TIMEOUT then takes no environment offline.
  * Redis reachable but missing data: while the configuration cache is incomplete (``CACHE_READY_KEY`` absent; the
    supervisor's controller rebuilds it within a second), a missing application entry means "don't know", so the
    last known configuration is kept. A missing registration or status of one of the application's environments
    means "don't know" too (agents publish theirs again within a second), so the last known one is kept. A real
    removal deletes the entry while the cache is complete: that is None (404), and the last known view is dropped.
  * An entry that is there but does not verify (garbled, or not signed by whom it must be) is "don't know"
    as well: it is never used, and the last known one is kept. So whoever can write to Redis but has no secret
    cannot take a running application away from its users by rewriting an entry; the owner of the entry (the agent's
    next heartbeat or state, the controller's cache rebuild) writes it again.
  * An entry that verifies but is older than one this process has already seen (its ``seq``, exchange.sequence,
    is lower: an old signed value copied back into Redis) is "don't know" too: the newest one seen is kept, per
    environment (registrations) and per status field, whichever application's view saw it. So a replayed
    "running" keeps no stopped application online, and a replayed registration sends nothing to an old address;
    the agent writes its own back within a second (workers.agent). A process that never saw the newer entry takes
    the replay until then. Entries written without ``seq`` (an earlier version) are ordered by their time.

One read is one pipeline round trip: the configuration entry, the cache's readiness, and the registrations and
statuses of the environments the last known view names (a second trip only when the configuration names other
environments, i.e. on the first read of an application or after it was placed elsewhere).
"""

import dataclasses
import logging
import select
import socket
import threading
import time
from dataclasses import dataclass, field

import redis as redis_lib

from . import cache, events, registry
from . import status as status_module
from .contract import APPS_KEY, CACHE_READY_KEY, ENVIRONMENTS_KEY, STATUSES_KEY, status_field
from .redis_client import CONNECT_TIMEOUT, lookup_redis, resolve_url, supervisor_redis

log = logging.getLogger("appsup.directory")

TTL = 1.0
# Requests for names that do not exist are cached too; past this many entries the expired ones are dropped, so a
# client asking for random names cannot grow the process without bound.
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class AppView:
    name: str
    config: dict  # the configuration cache entry (apps.models.Application.cache_entry)
    environments: dict = field(default_factory=dict)  # name -> registration, for this app's environments
    statuses: dict = field(default_factory=dict)  # environment name -> {state, error, traceback, at}
    # False when some of it was kept from an earlier view because Redis had lost it (see the module docstring).
    complete: bool = True
    # When it was read from Redis (time.time()); a view answered while Redis cannot be read keeps its own: the
    # liveness of its environments is judged as of then (proxy.targets), not aged by an outage of the supervisor's.
    read_at: float | None = None
    # (began, ended), time.time(), of the last outage of Redis this process saw before READ_AT (Directory), or None.
    unread: tuple | None = None

    @property
    def environment_names(self):
        return list(self.config.get("environments", []))


def _environment_names(config):
    return [env for env in config.get("environments", []) if isinstance(env, str)]


class Latest:
    """The newest verified entry this process has seen of each registration and status (by its ``seq``), so that an
    older one read later is not taken (see the module docstring). Bounded by the entries there are: only entries
    that verify are remembered, and only those signed by whom they must be (exchange.keys) verify."""

    def __init__(self):
        self._entries = {}  # ("environment", name) or ("status", app, environment) -> (seq, entry)
        self._lock = threading.Lock()

    def take(self, key, entry, seq):
        """ENTRY when it is not older than the newest seen under KEY (then it is the newest), else the newest."""
        with self._lock:
            newest = self._entries.get(key)
            if newest is not None and seq < newest[0]:
                return newest[1]
            self._entries[key] = (seq, entry)
            return entry

    def clear(self):
        with self._lock:
            self._entries.clear()


def _fetch(r, name, previous=None, latest=None):
    """``(view, known)`` for NAME from Redis: VIEW None when there is no such application; KNOWN False when that
    None only means "the cache is incomplete and nothing was known before". PREVIOUS, the last known view, fills
    in what Redis has lost and names the environments to read in the first round trip. LATEST (a ``Latest``):
    what replaces an entry older than one seen before."""
    guess = _environment_names(previous.config) if previous is not None else []
    pipe = r.pipeline(transaction=False)
    pipe.hget(APPS_KEY, name)
    pipe.exists(CACHE_READY_KEY)
    if guess:
        pipe.hmget(ENVIRONMENTS_KEY, guess)
        pipe.hmget(STATUSES_KEY, [status_field(name, env) for env in guess])
    results = pipe.execute()
    raw_config, ready = results[0], bool(results[1])
    registrations, statuses = {}, {}
    if guess:
        registrations.update(zip(guess, results[2]))
        statuses.update(zip(guess, results[3]))

    complete = True
    config = cache.decode(raw_config, name)
    if config is None:
        removed = raw_config is None and ready
        if removed or previous is None:
            return None, ready
        config, complete = previous.config, False  # being rebuilt, or does not verify: keep what we knew

    envs = _environment_names(config)
    others = [env for env in envs if env not in registrations]
    if others:
        pipe = r.pipeline(transaction=False)
        pipe.hmget(ENVIRONMENTS_KEY, others)
        pipe.hmget(STATUSES_KEY, [status_field(name, env) for env in others])
        more_registrations, more_statuses = pipe.execute()
        registrations.update(zip(others, more_registrations))
        statuses.update(zip(others, more_statuses))

    view_registrations, view_statuses = {}, {}
    for env in envs:
        # Lost, never there, or not verifying (garbled, unsigned): keep the last known one, if any.
        raw = registrations.get(env)
        entry = None if raw is None else registry.decode(raw, env)
        if entry is not None and latest is not None:
            newest = latest.take(("environment", env), entry, registry.seq_of(entry))
            entry, complete = newest, complete and newest is entry
        if entry is None and previous is not None and env in previous.environments:
            entry, complete = previous.environments[env], False
        if entry is not None:
            view_registrations[env] = entry
        raw = statuses.get(env)
        entry = None if raw is None else status_module.decode(raw, name, env)
        if entry is not None and latest is not None:
            newest = latest.take(("status", name, env), entry, status_module.seq_of(entry))
            entry, complete = newest, complete and newest is entry
        if entry is None and previous is not None and env in previous.statuses:
            entry, complete = previous.statuses[env], False
        if entry is not None:
            view_statuses[env] = entry
    return AppView(name, config, view_registrations, view_statuses, complete, read_at=time.time()), True


def read(name, redis=None, previous=None):
    """The application's view from Redis, or None when no such application is configured (or, with the cache
    incomplete, none is known)."""
    return _fetch(redis or supervisor_redis(), name, previous)[0]


class _WatchedSocket:
    """The event listener's socket, made to tell other threads whether an event reached the process unhandled.

    A read marks the listener busy from the moment it consumes data; the listener marks it idle again once it has
    handled everything it read (Listener's ``caught_up``: nothing buffered in the parser, nothing waiting in the
    kernel). So "readable, or busy" is exact: no window in which a published event has left the kernel but not yet
    reached the directory's handler. (Not on the socket's next read: redis-py waits for data with poll() on the file
    descriptor, so an idle listener would never read again and every lookup would miss.)"""

    def __init__(self, sock):
        self._sock = sock
        self._timeout = sock.gettimeout()
        self.busy = False

    def __getattr__(self, name):
        return getattr(self._sock, name)

    def settimeout(self, timeout):
        self._timeout = timeout
        self._sock.settimeout(timeout)

    def _wait(self):
        if self._timeout != 0:
            readable, _, _ = select.select([self._sock], [], [], self._timeout)
            if not readable:
                raise socket.timeout("timed out")
        self.busy = True

    def recv_into(self, buffer, *args, **kwargs):
        self._wait()
        return self._sock.recv_into(buffer, *args, **kwargs)

    def recv(self, *args, **kwargs):
        self._wait()
        return self._sock.recv(*args, **kwargs)

    def unhandled(self):
        """Whether data has reached this socket that the listener has not handled yet (called by other threads)."""
        try:
            readable, _, _ = select.select([self._sock], [], [], 0)  # first, then busy: see the class docstring
        except (OSError, ValueError, TypeError):  # closed: the listener reconnects and invalidates everything
            return False
        return bool(readable) or self.busy


def events_client():
    """A client of its own for the event listener: the shared ones are closed by redis_client.reset(), which must
    not pull a subscription's socket from under the listener's thread; and its sockets are _WatchedSockets."""
    from django.conf import settings

    pool = redis_lib.ConnectionPool.from_url(resolve_url(settings.APP_SUPERVISOR_REDIS_URL),
                                             socket_connect_timeout=CONNECT_TIMEOUT, health_check_interval=5)
    base = pool.connection_class

    def _connect(self):
        return _WatchedSocket(base._connect(self))

    pool.connection_class = type(f"Watched{base.__name__}", (base,), {"_connect": _connect})
    return redis_lib.Redis(connection_pool=pool)


class _Watched:
    """The listener's client, noting the subscription it opens (Directory._event_pending looks at its socket)."""

    def __init__(self, client, directory):
        self.client = client
        self.directory = directory

    def pubsub(self, **kwargs):
        pubsub = self.client.pubsub(**kwargs)
        self.directory._subscription = pubsub
        return pubsub


class _Flight:
    """One read of an application's view from Redis, that concurrent misses of it wait for."""

    def __init__(self, changes):
        self.changes = changes  # Directory._changes when the read began
        self.done = threading.Event()
        self.view = None
        self.error = None


@dataclass(frozen=True)
class _Entry:
    fetched_at: float | None  # None: not fresh (an event said it changed), kept as the last known view
    view: AppView | None
    known: bool  # False: VIEW is None only because the cache was incomplete; nothing to fall back on


class Directory:
    """A per-process cache of views: fresh for TTL seconds unless an event says otherwise, and the last known view of
    each application kept for Redis outages and losses (see the module docstring).

    With ``listen``, the first lookup starts this process's event listener (exchange.events.listen_once)."""

    def __init__(self, ttl=TTL, clock=time.monotonic, redis=lookup_redis, listen=False, listen_key=None,
                 events_connect=events_client):
        self.ttl = ttl
        self.clock = clock
        self.redis = redis  # () -> a Redis client
        self.events_connect = events_connect  # () -> a Redis client for the listener's subscription
        self.listen_events = listen
        self.listen_key = listen_key or f"directory-{id(self)}"
        self.listener = None
        self._subscription = None  # the listener's PubSub, whose socket tells whether an event is on its way
        self._entries = {}
        self._flights = {}  # name -> the _Flight reading it now
        self.latest = Latest()
        self._changes = 0  # bumped by every invalidation: a read that overlapped one is not stored as fresh
        self._lock = threading.Lock()
        self._read_ok_at = None  # time.time() of the last read that Redis answered
        self._outage_began = None  # while Redis does not answer: when it last did
        self._unread = None  # (began, ended) of the last outage, once over

    # -- events ---------------------------------------------------------------------------------------------------

    def listen(self):
        """Start (once per process and key) the listener that invalidates views on events; returns it."""
        listener = self.listener
        if listener is None or not listener.thread.is_alive():
            listener = self.listener = events.listen_once(self.listen_key, self._connect_events, self.handle_event,
                                                          caught_up=self._caught_up)
        return listener

    def _connect_events(self):
        return _Watched(self.events_connect(), self)

    @staticmethod
    def _caught_up(pubsub):
        sock = getattr(getattr(pubsub, "connection", None), "_sock", None)
        if isinstance(sock, _WatchedSocket):
            sock.busy = False

    def _event_pending(self):
        """Whether an event has reached this process that the listener has not handled yet: the listener thread
        may not have run when the next request asks (the publisher's reply, and so its next request, can arrive
        before that thread gets the GIL). A fresh view is not trusted then."""
        sock = getattr(getattr(self._subscription, "connection", None), "_sock", None)
        if isinstance(sock, _WatchedSocket):
            return sock.unhandled()
        if sock is None:
            return False
        try:  # a client of another kind (Directory(events_connect=...)): what is still in the kernel, at least
            return bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError, TypeError):
            return False

    def stop_listening(self):
        if self.listener is not None:
            self.listener.stop()
            self.listener = None

    def handle_event(self, event):
        """An exchange.events event; None when the listener (re)subscribed and may have missed some."""
        if event is None:
            return self.invalidate()
        kind = event.get("type")
        name = event.get("app") if kind == events.PLACEMENT else event.get("name") if kind == events.APP else None
        if kind in (events.PLACEMENT, events.APP) and isinstance(name, str):
            return self.invalidate(name)
        if kind == events.ENVIRONMENT and isinstance(event.get("name"), str):
            # Heartbeats announce one each: only the views placing an application there may have changed.
            return self.invalidate_environment(event["name"])
        if kind == events.UPGRADE:
            return None  # progress of a fleet upgrade: its app events say which views changed
        return self.invalidate()  # a cache rebuild, or anything unexpected: everything may have changed

    def invalidate(self, name=None):
        """Make NAME's view (every view when None) not fresh; the last known views are kept for outages."""
        with self._lock:
            self._changes += 1
            if name is None:
                self._entries = {key: _Entry(None, e.view, e.known) for key, e in self._entries.items()}
            else:
                entry = self._entries.get(name)
                if entry is not None:
                    self._entries[name] = _Entry(None, entry.view, entry.known)

    def invalidate_environment(self, environment):
        with self._lock:
            self._changes += 1
            self._entries = {
                key: _Entry(None, e.view, e.known)
                if e.view is None or environment in _environment_names(e.view.config) else e
                for key, e in self._entries.items()
            }

    # -- lookups --------------------------------------------------------------------------------------------------

    def cached(self, name):
        """``(True, view)`` when a fresh view is in memory, else ``(False, None)``: never goes to Redis, so async
        callers can answer inline and read Redis in a thread only on a miss."""
        if self.listen_events:
            self.listen()
            # Before reading the entry, not after: an event the listener handles in between has invalidated it by
            # then, whereas one handled after a fresh entry was taken would leave neither pending nor seen (the
            # listener clears "busy" once done), and the stale entry would be answered.
            if self._event_pending():
                return False, None
        with self._lock:
            hit = self._entries.get(name)
        if hit is not None and hit.fetched_at is not None and self.clock() - hit.fetched_at < self.ttl:
            return True, hit.view
        return False, None

    def lookup(self, name):
        """NAME's view (None: no such application). Raises redis.RedisError only when Redis cannot be read and
        nothing is known of NAME.

        Concurrent misses of one name share one read of Redis (a hung Redis then costs each request at most one
        LOOKUP_TIMEOUT, not one per request queued behind the others), unless something changed since that read
        began: a request that comes after a change is answered from a read made after it."""
        found, view = self.cached(name)
        if found:
            return view
        pending = self.listen_events and self._event_pending()
        with self._lock:
            flight = self._flights.get(name)
            joined = flight is not None and flight.changes == self._changes and not pending
            if not joined:  # a read of its own, which the next misses join
                flight = self._flights[name] = _Flight(self._changes)
        if joined:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.view
        try:
            flight.view = self._read(name)
            return flight.view
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                if self._flights.get(name) is flight:
                    del self._flights[name]
            flight.done.set()

    def _read(self, name):
        with self._lock:
            last = self._entries.get(name)
            changes = self._changes
        previous = last.view if last is not None else None
        now = self.clock()
        try:
            view, known = _fetch(self.redis(), name, previous, self.latest)
        except redis_lib.RedisError as exc:
            with self._lock:
                if self._outage_began is None:
                    self._outage_began = self._read_ok_at if self._read_ok_at is not None else time.time()
            if last is None or not (last.known or last.view is not None):
                raise
            log.warning("Redis unreachable, %s answered from its last known view: %s", name, exc)
            # Try Redis again after a TTL, not on every request (a reconnecting listener invalidates sooner).
            self._store(name, _Entry(now, last.view, last.known), changes, now)
            return last.view
        view = self._note_read(view)
        self._store(name, _Entry(now, view, known), changes, now)
        return view

    def _note_read(self, view):
        """VIEW, which Redis has just answered, with the last outage this process saw (AppView.unread)."""
        with self._lock:
            self._read_ok_at = view.read_at if view is not None else time.time()
            if self._outage_began is not None:
                self._unread, self._outage_began = (self._outage_began, self._read_ok_at), None
            unread = self._unread
        return view if view is None or unread is None else dataclasses.replace(view, unread=unread)

    def _store(self, name, entry, changes, now):
        with self._lock:
            if self._changes != changes:  # an event arrived while reading: keep it as last known, not fresh
                entry = _Entry(None, entry.view, entry.known)
            if name not in self._entries and len(self._entries) >= MAX_ENTRIES:
                self._evict(now)
            self._entries[name] = entry

    def _evict(self, now):
        """Drop what is neither fresh nor an application's last known view; then every miss; then everything."""

        def fresh(e):
            return e.fetched_at is not None and now - e.fetched_at < self.ttl

        self._entries = {k: e for k, e in self._entries.items() if e.view is not None or fresh(e)}
        if len(self._entries) >= MAX_ENTRIES:
            self._entries = {k: e for k, e in self._entries.items() if e.view is not None}
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()

    def clear(self):
        """Forget everything, last known views included (tests change Redis between requests)."""
        with self._lock:
            self._changes += 1
            self._entries.clear()
            self.latest.clear()


directory = Directory(listen=True, listen_key="directory")

# Where the hosting of applications reads their views (workers.hosting): this process's Redis-backed ``directory``,
# unless a single instance (APP_DISCOVERY_ADAPTER=local) has put one that reads its own database here (single/).
hosted_source = directory


def hosted_lookup(name):
    """NAME's view for the hosting of applications, from ``hosted_source``."""
    return hosted_source.lookup(name)
