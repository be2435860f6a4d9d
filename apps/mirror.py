"""Mirror the runtime statuses workers report (exchange.status) onto the supervisor's Placement rows, with one HMGET
for all the rows and one UPDATE for what changed.
"""

import contextlib
import time
from datetime import datetime
from datetime import timezone as dt_timezone

import redis

from environments import bulk
from exchange import events, status
from exchange.contract import EVENTS_CHANNEL, REFUSED_KEY, REFUSED_STATUS, STATUSES_KEY, status_field

STATUS_FIELDS = ("state", "error", "traceback", "state_at")


def is_newer(entry, state_at):
    """Whether a reported ENTRY is newer than what a placement last mirrored at STATE_AT."""
    return entry is not None and (state_at is None or _at(entry) > state_at)


def _at(entry):
    return datetime.fromtimestamp(entry["at"], tz=dt_timezone.utc)


def apply(placement, entry):
    """Copy a reported status onto a placement when it is newer. Returns True if it changed."""
    if not is_newer(entry, placement.state_at):
        return False
    placement.state = entry["state"]
    placement.error = entry.get("error") or ""
    placement.traceback = entry.get("traceback") or ""
    placement.state_at = _at(entry)
    return True


def refresh(redis, placements):
    """Bring placements up to date with Redis in one round trip and one write."""
    placements = list(placements)
    fields = [status_field(p.application.name, p.environment.name) for p in placements]
    changed = [p for p, entry in zip(placements, status.fetch(redis, fields)) if apply(p, entry)]
    save(changed)
    return changed


def save(placements):
    """Write the mirrored status of PLACEMENTS (changed by ``apply``) in one statement; a placement that another
    writer (the controller, a request's refresh) has meanwhile mirrored a newer status to keeps that one."""
    bulk.update(placements, STATUS_FIELDS, newer="state_at")


class Seen:
    """What one long-lived caller (the controller) last mirrored of the reported states, so that a pass costs what
    changed since the last one rather than a read of every state (100,000 of them: 130 ms for the HGETALL alone).

    Workers announce each report on the events channel (exchange.status.write); between full reads, only the
    fields those events name are read (one HMGET), and of those only the entries whose bytes changed are decoded.
    Events only say where to look, the entries read are verified as always. Pub/sub loses what is sent while the
    subscriber is disconnected, so the whole hash is read again on (re)subscribing, at once, and every
    FULL_READ_SECONDS as a safety net, a SWEEP_COUNT fields per pass (HSCAN): reading 100,000 entries at once
    made one pass in twenty take 200 ms more than the others.
    """

    def __init__(self):
        self.entries = {}  # field (bytes) -> raw entry (bytes), as last read
        # field (bytes) -> the highest seq (exchange.sequence) of the entries mirrored there: a lower one is an old
        # entry copied back, never mirrored (entries are also only mirrored when their time is newer: is_newer).
        self.seqs = {}
        self.watch = None  # a pub/sub subscription to the events channel
        self.full_read_at = None  # time.monotonic() of the last full read (or start of the last whole sweep)
        self.sweep = None  # (HSCAN cursor, when the sweep began) while a sweep of the hash is under way

    def close(self):
        if self.watch is not None:
            self.watch.close()
            self.watch = None

    def announced(self):
        """The fields of the reported states announced since the last call; None when there is no subscription
        or it broke (announcements may then have been lost)."""
        if self.watch is None:
            return None
        fields = set()
        try:
            # Subscription confirmations are messages too (not None, which means none is waiting).
            messages = list(iter(lambda: self.watch.get_message(timeout=0), None))
        except (redis.ConnectionError, redis.TimeoutError):
            with contextlib.suppress(redis.RedisError, OSError):
                self.close()
            self.watch = None
            return None
        for message in messages:
            if message["type"] != "message":
                continue
            data = message["data"]
            # Most events are heartbeats: a cheap look before decoding the few that may be reports.
            if isinstance(data, bytes) and b'"placement"' in data:
                event = events.decode(data)
                if event and event["type"] == events.PLACEMENT and isinstance(event.get("app"), str) \
                        and isinstance(event.get("environment"), str):
                    fields.add(status_field(event["app"], event["environment"]).encode())
        return fields


# Every reported state is read again, whatever the events said, in a sweep that begins this long after the last one
# (or the last full read) began.
FULL_READ_SECONDS = 10.0
# How many fields of the reported states one pass of such a read asks for (HSCAN's COUNT, a hint).
SWEEP_COUNT = 5000
# Up to this many changed entries, only their placements are read; beyond it, every placement in one SELECT.
FEW = 500


def refresh_all(redis, seen=None):
    """Mirror every reported status onto its placement: one HGETALL, one SELECT of plain rows, one UPDATE for
    what changed. With SEEN (kept by the caller between calls; see Seen): after the first read, one HMGET of the
    fields announced since (and, during a sweep, one HSCAN), and only the entries whose bytes changed are decoded
    and their placements read.
    Returns the names of the applications whose placements changed."""
    if seen is None:
        return _mirror(redis.hgetall(STATUSES_KEY), None, conn=redis)
    fields = seen.announced()
    if fields is None:  # not subscribed yet, or the subscription broke
        seen.watch = redis.pubsub()
        seen.watch.subscribe(EVENTS_CHANNEL)
        seen.full_read_at = None  # subscribed first: what is reported from now on is announced
    if seen.full_read_at is None:  # announcements may have been lost: everything, now
        began = time.monotonic()
        reported = redis.hgetall(STATUSES_KEY)
        fresh = {field: raw for field, raw in reported.items() if seen.entries.get(field) != raw}
        apps = _mirror(fresh, len(fresh) <= FEW, seen.seqs, conn=redis)
        seen.entries, seen.full_read_at, seen.sweep = reported, began, None
        return apps
    fields = sorted(fields)
    read = dict(zip(fields, redis.hmget(STATUSES_KEY, fields))) if fields else {}
    if seen.sweep is None and time.monotonic() - seen.full_read_at > FULL_READ_SECONDS:
        seen.sweep = (0, time.monotonic())
    if seen.sweep is not None:
        cursor, began = seen.sweep
        cursor, page = redis.hscan(STATUSES_KEY, cursor, count=SWEEP_COUNT)
        read.update(page)
        seen.sweep = (cursor, began) if cursor else None
        if not cursor:
            seen.full_read_at = began
    fresh = {field: raw for field, raw in read.items() if raw is not None and seen.entries.get(field) != raw}
    if not fresh:
        return []
    apps = _mirror(fresh, len(fresh) <= FEW, seen.seqs, conn=redis)
    seen.entries.update(fresh)
    return apps


def _mirror(fresh, few, seqs=None, conn=None):
    """Apply the raw entries FRESH ({field: raw}) to their placements; FEW: read only theirs, not every one. SEQS
    (Seen.seqs): an entry with a lower seq than the last one mirrored to its field is skipped. Entries that do not
    verify as their environment's are counted in CONN (contract.REFUSED_KEY)."""
    from .models import Placement

    if not fresh:
        return []
    rows = Placement.objects.values_list("pk", "application__name", "environment__name", "state", "error", "state_at")
    if few:
        pairs = [field.decode(errors="replace").split("/", 1) for field in fresh]
        rows = rows.filter(application__name__in={pair[0] for pair in pairs},
                           environment__name__in={pair[-1] for pair in pairs})
    changed, apps, refused = [], set(), 0
    for pk, app, env, state, error, state_at in rows:
        field = status_field(app, env).encode()
        raw = fresh.get(field)
        if raw is None:
            continue
        entry = status.decode(raw, app, env)
        if entry is None:
            refused += 1
        if entry is not None and seqs is not None:
            seq = status.seq_of(entry)
            if seq < seqs.get(field, -1):
                continue
            seqs[field] = seq
        if is_newer(entry, state_at):
            placement = Placement(pk=pk, state=state, error=error, state_at=state_at)
            apply(placement, entry)
            changed.append(placement)
            apps.add(app)
    save(changed)
    if refused and conn is not None:  # each stored value once: only values whose bytes changed are read here
        conn.hincrby(REFUSED_KEY, REFUSED_STATUS, refused)
    return sorted(apps)
