"""What the events socket (/ws/events/) sends: the supervisor's change events (exchange.events), verified, from one
Redis subscription per process shared by every open socket (``hub``).

Anyone who can write to Redis can publish on the events channel, so an event is only a hint of where to look, and
what is sent comes from where the truth is: a placement's state from its signed status entry (exchange.status;
"unknown" while its environment is offline, as pages show it), an environment's status from the database, which
the controller updates before it announces a change. An event naming nothing real, or whose entry does not verify,
is dropped; one that only repeats what was sent already is dropped too. Events are coalesced (``Hub._relay``):
what the events of a quarter of a second point at is read at once, each thing once, in one database query and one
Redis read, and at most BATCH_LIMIT things a window: a flood of events costs a bounded amount of work a second.

Messages, one JSON object each:

- ``{"type": "placement", "app", "environment", "state", "error", "at"}`` (``at``: ISO 8601);
- ``{"type": "environment", "name", "status", "problem", "last_heartbeat_at", ...}`` (the API's ENV);
- ``{"type": "app", "name"}``: an application's configuration changed (created, started, stopped, removed);
- ``{"type": "log", "app"}``: requests of the application were recorded (exchange.applog, from contract.LOGS_CHANNEL):
  a hint for a Logs page's live tail, which reads the entries (verified) through the API;
- ``{"type": "stream", "status": "live", "now"}`` once subscribed, again after a reconnection or a flood of events:
  events may have been missed meanwhile, so whoever shows them reads the state afresh; ``now`` (Unix time) lets a browser allow
  for its clock;
- ``{"type": "stream", "status": "reconnecting", "problem"}`` while Redis is unreachable (retried with backoff);
- ``{"type": "supervisor", "warning": text or null}``: whether what pages show is being kept up to date (no
  controller has run for a while, or it cannot reach Redis: apps.refresh.staleness_warning), sent to each new socket
  and whenever it changes (looked at every SUPERVISOR_CHECK_SECONDS), so a page's "live" does not claim more than
  it knows.
"""

import asyncio
import logging
import os
import time
from datetime import datetime
from datetime import timezone as dt_timezone

import redis.asyncio as aioredis
from channels.db import database_sync_to_async
from django.conf import settings
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from environments.api import environment_dict
from environments.models import Environment
from exchange import applog, events, redis_client, status
from exchange.contract import (
    EVENTS_CHANNEL,
    HEARTBEATS_CHANNEL,
    LOG_EVENT,
    LOGS_CHANNEL,
    NAME_RE,
    OFFLINE,
    STATUSES_KEY,
    UNKNOWN,
    status_field,
)
from fleet.models import Upgrade
from fleet.upgrades import upgrade_dict

log = logging.getLogger("appsup.live")

STREAM = "stream"
LIVE = "live"
RECONNECTING = "reconnecting"

# Messages waiting for one socket; a socket further behind is skipped ahead (``Hub.broadcast``).
QUEUE_LIMIT = 1000
RETRY_FIRST, RETRY_CAP = 0.5, 5.0
# How often the subscription loop wakes when nothing is published (it then notices a lost connection).
POLL_SECONDS = 1.0
# Events are hints, coalesced: what the events of this long a window point at is read at its end, each thing once.
WINDOW = 0.25
# The most distinct things (environments, placements, applications) one window reads: a window's reads stay
# bounded however many names a flood of events carries.
BATCH_LIMIT = 500
# During a flood that lasts, pages are told to read everything afresh this often at most.
RESYNC_SECONDS = 10.0
SUPERVISOR = "supervisor"
SUPERVISOR_CHECK_SECONDS = 5.0


def is_name(value):
    return isinstance(value, str) and NAME_RE.fullmatch(value) is not None


def iso_from_unix(seconds):
    return datetime.fromtimestamp(seconds, tz=dt_timezone.utc).isoformat()


def client_name():
    """How this process's connections show in Redis's CLIENT LIST."""
    return f"appsup-live-{os.getpid()}"


def live_message():
    return {"type": STREAM, "status": LIVE, "now": time.time()}


def environment_messages(names):
    """{name: the environment as the API shows it} of those of NAMES that have a row, in one query."""
    return {environment.name: {"type": events.ENVIRONMENT, **environment_dict(environment)}
            for environment in Environment.objects.filter(name__in=names).select_related("drain")}


def upgrade_messages(ids):
    """The fleet upgrades IDS as the API shows them (fleet.upgrades.upgrade_dict), for those that exist."""
    return [{"type": events.UPGRADE, **upgrade_dict(upgrade)}
            for upgrade in Upgrade.objects.filter(pk__in=ids).prefetch_related("steps")]


class Batch:
    """What the events of one window (WINDOW) point at, each thing once however many events named it: the names
    of environments and applications and the (app, environment) of placements. Past BATCH_LIMIT distinct things the
    window is a flood: further ones are not kept (``overflow``), and pages are told to read everything afresh."""

    def __init__(self, limit=None):
        self.limit = BATCH_LIMIT if limit is None else limit
        self.environments, self.placements, self.apps = set(), set(), set()
        self.upgrades = set()  # fleet upgrades (fleet.upgrades), by id
        self.logs = set()  # applications whose requests were recorded
        self.overflow = False

    def __len__(self):
        return len(self.environments) + len(self.placements) + len(self.apps) + len(self.upgrades) + len(self.logs)

    def take(self, message):
        """Add one pub/sub MESSAGE, whichever channel it came from."""
        channel = message.get("channel")
        if channel in (LOGS_CHANNEL, LOGS_CHANNEL.encode()):
            self.add_log(message["data"])
        else:
            self.add(message["data"])

    def add_log(self, raw):
        app = applog.log_event_app(raw)
        if app is None or app in self.logs:
            return
        if len(self) >= self.limit:
            self.overflow = True
            return
        self.logs.add(app)

    def add(self, raw):
        event = events.decode(raw)
        if event is None:
            return
        kind = event["type"]
        if kind == events.PLACEMENT:
            key, into = (event.get("app"), event.get("environment")), self.placements
            valid = is_name(key[0]) and is_name(key[1])
        elif kind == events.ENVIRONMENT:
            key, into = event.get("name"), self.environments
            valid = is_name(key)
        elif kind == events.APP:
            key, into = event.get("name"), self.apps
            valid = is_name(key)
        elif kind == events.UPGRADE:
            key, into = event.get("id"), self.upgrades
            valid = type(key) is int and key > 0
        else:
            return  # the configuration cache was rebuilt: nothing a page shows
        if not valid or key in into:
            return
        if len(self) >= self.limit:
            self.overflow = True
            return
        into.add(key)


class Verifier:
    """Turns the events of a window (a Batch) into messages worth sending, with one database query and one Redis
    read whatever their number; remembers what it sent, to drop repeats."""

    def __init__(self, redis):
        self.redis = redis
        self.sent = {}
        # (app, environment) -> the highest seq of the statuses read (exchange.sequence): a lower one is an old
        # entry copied back into Redis, and is not sent.
        self.seqs = {}

    async def messages(self, batch):
        placements = sorted(batch.placements)
        names = batch.environments | {environment for _, environment in placements}
        environments = await database_sync_to_async(environment_messages)(names) if names else {}
        raws = await self.redis.hmget(STATUSES_KEY, [status_field(*p) for p in placements]) if placements else []
        found = []
        for name in sorted(batch.environments):
            found.append(self._new((events.ENVIRONMENT, name), environments.get(name)))
        for (app, environment), raw in zip(placements, raws):
            entry = status.decode(raw, app, environment)
            if entry is None:
                continue
            seq = status.seq_of(entry)
            if seq < self.seqs.get((app, environment), -1):
                continue  # an old entry copied back
            self.seqs[(app, environment)] = seq
            shown = environments.get(environment)
            offline = shown is None or shown["status"] == OFFLINE
            found.append(self._new((events.PLACEMENT, app, environment), {
                "type": events.PLACEMENT,
                "app": app,
                "environment": environment,
                "state": UNKNOWN if offline else entry["state"],
                "error": entry.get("error") or None,
                "at": iso_from_unix(entry["at"]),
            }))
        found.extend({"type": events.APP, "name": name} for name in sorted(batch.apps))
        if batch.upgrades:
            upgrades = await database_sync_to_async(upgrade_messages)(sorted(batch.upgrades))
            found.extend(self._new((events.UPGRADE, message["id"]), message) for message in upgrades)
        found.extend({"type": LOG_EVENT, "app": name} for name in sorted(batch.logs))
        return [message for message in found if message is not None]

    def _new(self, key, message):
        if message is None or self.sent.get(key) == message:
            return None
        self.sent[key] = message
        return message


class Hub:
    """One subscription to the events channel for all the sockets of this process (and its event loop): started
    by the first subscriber, ended with the last."""

    def __init__(self, retry_first=RETRY_FIRST, retry_cap=RETRY_CAP):
        self.retry_first, self.retry_cap = retry_first, retry_cap
        self.queues = set()
        self.task = None
        self.watcher = None
        self.status = None  # the last stream message: what a new subscriber is told first
        self.supervisor = None  # the last supervisor message: told next

    def subscribe(self):
        """A queue of messages for one socket."""
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.queues, self.status, self.supervisor = set(), None, None
            self.task = loop.create_task(self.run(), name="appsup-live-events")
        queue = asyncio.Queue(QUEUE_LIMIT)
        if self.status is not None:
            queue.put_nowait(live_message() if self.status["status"] == LIVE else self.status)
        if self.supervisor is not None:
            queue.put_nowait(self.supervisor)
        self.queues.add(queue)
        return queue

    def unsubscribe(self, queue):
        self.queues.discard(queue)
        if not self.queues and self.task is not None:
            self.task.cancel()
            if self.watcher is not None:
                self.watcher.cancel()
            self.task, self.watcher, self.status, self.supervisor = None, None, None, None

    async def watch_supervisor(self):
        """Tell the sockets whether the controller keeps what they show up to date: one query per process every
        SUPERVISOR_CHECK_SECONDS, whatever the number of sockets."""
        from apps.refresh import staleness_warning

        while True:
            try:
                warning = await database_sync_to_async(staleness_warning)()
            except Exception:  # the database away for a moment: say nothing new rather than end the watch
                log.warning("events socket: could not read the controller's state", exc_info=True)
            else:
                message = {"type": SUPERVISOR, "warning": warning}
                if message != self.supervisor:
                    self.supervisor = message
                    self.broadcast(message)
            await asyncio.sleep(SUPERVISOR_CHECK_SECONDS)

    def broadcast(self, message):
        for queue in self.queues:
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                # A socket this far behind gets no more of the backlog: "live" has its page read everything afresh.
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(live_message())

    def tell(self, message):
        """Broadcast a change of the stream's own status (not a repeat of it)."""
        if self.status is None or self.status["status"] != message["status"]:
            self.broadcast(message)
        self.status = message

    async def run(self):
        delay = self.retry_first
        flood = None  # a flood's state, carried across the subscriptions it makes _relay drop
        while True:
            client = None
            dropped = False
            try:
                url = await asyncio.to_thread(redis_client.resolve_url, settings.APP_SUPERVISOR_REDIS_URL)
                # No retries inside redis-py: a lost connection must reach this loop, which tells the sockets.
                client = aioredis.Redis.from_url(
                    url, socket_connect_timeout=redis_client.CONNECT_TIMEOUT,
                    socket_timeout=redis_client.SOCKET_TIMEOUT, health_check_interval=10, retry=Retry(NoBackoff(), 0),
                    client_name=client_name())
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    # pages show heartbeats too, and Logs pages their application's new requests
                    await pubsub.subscribe(EVENTS_CHANNEL, HEARTBEATS_CHANNEL, LOGS_CHANNEL)
                    if flood is None:  # within a flood, "live" waits for its end (_relay)
                        self.tell(live_message())
                    if self.watcher is None:  # after "live": what it qualifies
                        self.watcher = asyncio.get_running_loop().create_task(
                            self.watch_supervisor(), name="appsup-live-supervisor")
                    delay = self.retry_first
                    flood = await self._relay(pubsub, Verifier(client), flood)
                    dropped = True
            except (RedisError, OSError) as exc:
                log.warning("events socket: Redis is unavailable, retrying in %.1f s: %s", delay, exc)
                self.tell({"type": STREAM, "status": RECONNECTING, "problem": f"Redis is unavailable: {exc}"})
            finally:
                if client is not None:
                    await client.aclose()
            if dropped:
                continue
            flood = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_cap)

    async def _relay(self, pubsub, verifier, flood=None):
        """Relay the events, a window at a time: the first event opens a window of WINDOW seconds, and what the
        window's events point at is read at its end (Verifier.messages), so that a flood costs a few reads a
        second, never one per event. A window that overflowed is followed, once the flood is over (a window that
        did not overflow, or no event for POLL_SECONDS), or every RESYNC_SECONDS while it lasts, by a "live"
        message: pages read everything afresh once.

        A window that overflowed also ends the subscription: this returns the flood's state (FLOOD, to be given to
        the next call) and ``run`` subscribes again at once. What Redis and the socket hold for the old one is
        dropped with it: read, a flood of 300,000 events kept this process busy for more than 10 s after it ended,
        for events that only say "read everything afresh"."""
        loop = asyncio.get_running_loop()
        flood_since, last_resync = flood or (None, None)
        while True:
            message = await pubsub.get_message(timeout=POLL_SECONDS)
            if message is None or message.get("type") != "message":
                if flood_since is not None:  # quiet again: the flood is over
                    flood_since = None
                    self.broadcast(live_message())
                continue
            batch = Batch()
            batch.take(message)
            closes_at = loop.time() + WINDOW
            while (left := closes_at - loop.time()) > 0:
                message = await pubsub.get_message(timeout=left)
                if message is not None and message.get("type") == "message":
                    batch.take(message)
            try:
                forwarded = await verifier.messages(batch)
            except (RedisError, OSError):
                raise
            except Exception:  # one window's trouble (a database hiccup) must not end the stream
                log.exception("events socket: events could not be verified; dropped")
                continue
            for one in forwarded:
                self.broadcast(one)
            now = loop.time()
            if batch.overflow:
                if flood_since is None:
                    flood_since = last_resync = now
                    log.warning("events socket: a flood of events (more than %d things changed in %.1f s); "
                                "pages will read everything afresh once it is over", BATCH_LIMIT, WINDOW)
                elif now - last_resync >= RESYNC_SECONDS:
                    last_resync = now
                    self.broadcast(live_message())
                return flood_since, last_resync
            elif flood_since is not None:
                flood_since = None
                self.broadcast(live_message())


hub = Hub()
