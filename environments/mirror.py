"""Mirror the environment registry (exchange.registry) into the supervisor's database, and read every environment's
status in one query."""

import time
from collections import deque
from datetime import datetime
from datetime import timezone as dt_timezone

from django.conf import settings
from django.db import models

from environments import bulk
from exchange import registry, signing
from exchange.contract import (
    DEGRADED,
    ENVIRONMENTS_KEY,
    NAME_RE,
    OFFLINE,
    ONLINE,
    REFUSED_KEY,
    REFUSED_REGISTRATION,
    REJECTED_REGISTRATIONS_KEY,
)

from . import enrollment
from .models import Environment, online_q

MIRRORED_FIELDS = (
    "url", "proxy_url", "version", "host", "pid", "last_heartbeat_at", "stopped_at", "web_ok", "problem", "refusal",
    "refusal_at", "rejected",
)


HEARTBEAT = MIRRORED_FIELDS.index("last_heartbeat_at")


def _beat_only(before, after):
    """Whether two MIRRORED_FIELDS values differ in the heartbeat's time at most."""
    return before[:HEARTBEAT] == after[:HEARTBEAT] and before[HEARTBEAT + 1:] == after[HEARTBEAT + 1:]


def _ts(value):
    return None if value is None else datetime.fromtimestamp(value, tz=dt_timezone.utc)


def _values(entry):
    """What a verified registration ENTRY makes of an Environment row: MIRRORED_FIELDS' values, in order."""
    return (
        entry["url"],
        entry.get("proxy_url") or "",
        str(entry.get("version") or ""),
        str(entry.get("host") or ""),
        entry.get("pid"),
        _ts(entry.get("heartbeat_at")),
        _ts(entry.get("stopped_at")),
        entry.get("web_ok"),
        entry.get("problem") or "",
        entry.get("refusal") or "",
        _ts(entry.get("refusal_at")),
        "",
    )


# How many of the last rejected registrations are kept and shown (name, reason, when first seen).
RECENT_REJECTED = 20
# A name that is not an environment's is shown this long at most: it is whatever was written to Redis.
SHOWN_NAME_MAX = 60
NOT_A_NAME = "not a name an environment can have (an id is at most 40 characters of a-z, 0-9, '-' and '_')"


class Rejected:
    """The registrations in Redis that do not verify, as one caller (the controller) last counted them: never a row
    each (anyone who can write to Redis could make thousands, and every page and scrape would pay for them), only
    a count and the last few, published as one signed summary (REJECTED_REGISTRATIONS_KEY). A rejected entry is
    remembered by the hash of its bytes, so an unchanged one is neither verified nor reported again."""

    def __init__(self):
        self.known = {}  # name -> hash of the raw entry that did not verify
        self.recent = deque(maxlen=RECENT_REJECTED)  # {name, reason, at}, oldest first
        self.published = None  # the summary last written to Redis

    def is_known(self, name, raw):
        return self.known.get(name) == hash(raw)

    def update(self, found, unchanged, now):
        """FOUND: {name: (raw, reason)} newly rejected this pass; UNCHANGED: the names rejected before whose bytes
        did not change. Returns the summary to publish, or None when it is the one published already."""
        known = {name: self.known[name] for name in unchanged}
        for name, (raw, reason) in found.items():
            known[name] = hash(raw)
            self.recent.append({"name": name[:SHOWN_NAME_MAX], "reason": reason, "at": now})
        self.known = known
        summary = {"count": len(known), "recent": list(self.recent)}
        if summary == self.published:
            return None
        self.published = summary
        return summary


def rejected_summary(redis):
    """{count, recent: [{name, reason, at}], newest first} of the registrations the controller found not to
    verify, or None when it published none (or what is there does not verify)."""
    summary = signing.loads_or_none(redis.get(REJECTED_REGISTRATIONS_KEY), signing.SUPERVISOR)
    if not isinstance(summary, dict) or not isinstance(summary.get("count"), int) \
            or not isinstance(summary.get("recent"), list):
        return None
    recent = [item for item in summary["recent"] if isinstance(item, dict)
              and all(isinstance(item.get(key), str) for key in ("name", "reason"))
              and isinstance(item.get("at"), (int, float))]
    return {"count": summary["count"], "recent": [dict(item, at=_ts(item["at"])) for item in reversed(recent)]}


def unverified(redis, names):
    """{name: why} for those of NAMES whose registration in Redis is there but does not verify (they never have a
    row); raises redis.RedisError."""
    names = list(names)
    raws = redis.hmget(ENVIRONMENTS_KEY, names) if names else []
    return {name: registry.rejection(raw, name) for name, raw in zip(names, raws)
            if raw is not None and registry.decode(raw, name) is None}


class Seen:
    """What one long-lived caller (the controller) last mirrored: per environment name, the raw registry entry and
    the values it gave. An entry whose bytes did not change is neither verified nor decoded again, nor compared
    with its row: a pass costs in proportion to the heartbeats since the last one, not to the environments. An entry
    that changed in its heartbeat time only (registry.heartbeat_change) is verified, and not decoded again."""

    def __init__(self):
        # name -> (raw bytes, MIRRORED_FIELDS values, registry.heartbeat_parts of the entry when it verified)
        self.entries = {}
        self.updated = []  # the names whose row the last call created or changed
        self.beat_only = set()  # of those, the ones that changed in their heartbeat's time and nothing else
        self.rejected = Rejected()
        # name -> the highest seq (exchange.sequence) mirrored: a registration with a lower one is an old one copied
        # back into Redis, and changes nothing.
        self.seqs = {}

    def heartbeat(self, name, raw):
        """The values NAME's entry RAW gives, its heartbeat_parts and its seq, when it is the last one seen but for
        its heartbeat time and seq; else None."""
        _, values, parts = self.entries.get(name, (None, None, None))
        if parts is None:
            return None
        change = registry.heartbeat_change(raw, parts)
        if change is None:
            return None
        return (*values[:HEARTBEAT], _ts(change[1]), *values[HEARTBEAT + 1:]), change[0], change[2]

    def older(self, name, seq):
        """Whether SEQ is lower than the last one mirrored for NAME; else it becomes that one."""
        if seq < self.seqs.get(name, -1):
            return True
        self.seqs[name] = seq
        return False


def _older(entry, name, seen, mirrored):
    """Whether the verified registration ENTRY is older than what was mirrored for NAME: by its seq with SEEN, else
    (no memory of seqs) by its heartbeat time against the row's (MIRRORED)."""
    if seen is not None:
        return seen.older(name, registry.seq_of(entry))
    row = mirrored.get(name)
    heartbeat = _ts(entry.get("heartbeat_at"))
    known = row[1 + HEARTBEAT] if row is not None else None
    return heartbeat is not None and known is not None and heartbeat < known


def sync(redis, seen=None):
    """Mirror Redis registrations into the database: new environments are created, changed ones updated. Returns
    (how many created, how many updated). A registration that does not verify creates no row: it marks the row of
    an environment that has one as rejected, and is otherwise only counted (Rejected, with SEEN).

    Without SEEN: one HGETALL and one SELECT whatever the number of environments, plus an UPDATE for the
    heartbeats, one for other changes, and one INSERT for new environments. With SEEN (kept by the caller between
    calls): the SELECT reads names and keys only, and an entry is only decoded and written when its bytes changed
    since the last call (or its row went missing).
    Raises redis.ConnectionError when Redis is unavailable; callers then show the last mirrored state.
    """
    raw_entries = {raw_name.decode(errors="replace"): raw for raw_name, raw in redis.hgetall(ENVIRONMENTS_KEY).items()}
    if seen is None:
        # Plain rows to compare against: building a model instance per environment would cost more than the rest.
        mirrored = {row[0]: row[1:] for row in
                    Environment.objects.order_by().values_list("name", "pk", *MIRRORED_FIELDS)}
        keys = {name: row[0] for name, row in mirrored.items()}
        fresh = raw_entries
    else:
        mirrored = None
        keys = dict(Environment.objects.order_by().values_list("name", "pk"))
        fresh = {name: raw for name, raw in raw_entries.items()
                 if (name not in keys and not seen.rejected.is_known(name, raw))
                 or (name in keys and seen.entries.get(name, (None,))[0] != raw)}
    created, changed, values_of, parts_of = [], [], {}, {}
    rejected = {}  # name -> (raw, reason): entries that do not verify, newly found
    # Most changes are heartbeats and nothing else: those rows get one column written, not twelve.
    beats, others, beat_names = [], [], []
    for name, raw in fresh.items():
        if not NAME_RE.match(name):
            rejected[name] = (raw, NOT_A_NAME)  # never shown as an environment, never a proxy target
            continue
        beat = seen.heartbeat(name, raw) if seen is not None and name in keys else None
        if beat is not None and seen.older(name, beat[2]):
            values_of[name], parts_of[name] = seen.entries[name][1:]  # an old one copied back: keep the newest
            continue
        if beat is not None:
            values_of[name], parts_of[name] = beat[:2]
            changed.append(name)
            beats.append((keys[name], (beat[0][HEARTBEAT],)))
            beat_names.append(name)
            continue
        entry = registry.decode(raw, name)
        if entry is None and settings.APP_TRUST_ON_FIRST_USE and name not in keys:
            trusted = enrollment.trust_first_use(redis, name, raw)
            if trusted is not None:
                keys[name] = trusted
                entry = registry.decode(raw, name)
        if entry is not None and _older(entry, name, seen, mirrored):
            if seen is not None and name in seen.entries:
                values_of[name], parts_of[name] = seen.entries[name][1:]
            continue
        if entry is not None:
            values = _values(entry)
            if seen is not None:
                parts_of[name] = registry.heartbeat_parts(raw)
        else:
            # An entry that does not verify changes nothing of what was mirrored, but is shown: someone without the
            # environment's key wrote it (another environment, or a worker not enrolled, or with another key).
            reason = registry.rejection(raw, name)
            rejected[name] = (raw, reason)
            if name not in keys:
                continue  # counted, never a row: see Rejected
            if mirrored is not None:
                kept = mirrored[name][1:]
            elif seen.entries.get(name, (None, None, None))[1] is not None:
                kept = seen.entries[name][1]
            else:  # a forged entry before this caller saw a good one: rare, and remembered once read
                kept = Environment.objects.values_list(*MIRRORED_FIELDS).get(pk=keys[name])
            if kept[-1] == reason:
                values_of[name] = kept
                continue
            values = (*kept[:-1], reason)
        values_of[name] = values
        if name not in keys:
            created.append(Environment(name=name, **dict(zip(MIRRORED_FIELDS, values))))
        elif mirrored is None or name not in mirrored or mirrored[name][1:] != values:
            changed.append(name)
            before = (seen.entries.get(name, (None, None, None))[1] if seen is not None
                      else mirrored[name][1:] if name in mirrored else None)
            if before is not None and _beat_only(before, values):
                beats.append((keys[name], (values[HEARTBEAT],)))
                beat_names.append(name)
            else:
                others.append((keys[name], values))
    if rejected:
        redis.hincrby(REFUSED_KEY, REFUSED_REGISTRATION, len(rejected))
    if created:
        Environment.objects.bulk_create(created, ignore_conflicts=True)
    bulk.update_rows(Environment, ("last_heartbeat_at",), beats)
    bulk.update_rows(Environment, MIRRORED_FIELDS, others)
    if seen is not None:
        seen.entries = {name: (raw, values_of[name], parts_of.get(name)) if name in values_of else seen.entries[name]
                        for name, raw in raw_entries.items() if name in values_of or name in seen.entries}
        seen.updated = [e.name for e in created] + changed
        seen.beat_only = set(beat_names)
        unchanged = [name for name, raw in raw_entries.items() if name not in fresh and name in seen.rejected.known]
        summary = seen.rejected.update(rejected, unchanged, time.time())
        if summary is not None:
            redis.set(REJECTED_REGISTRATIONS_KEY, signing.dumps(summary, signer=signing.SUPERVISOR))
    return len(created), len(changed)


def status_expression(now=None):
    """Environment.status as SQL: ONLINE, DEGRADED or OFFLINE for each row, from the same definition of online."""
    online = online_q(now)  # on the row itself: a semi-join on the table's own key took twice as long
    return models.Case(
        models.When(online & models.Q(web_ok=False), then=models.Value(DEGRADED)),
        models.When(online, then=models.Value(ONLINE)),
        default=models.Value(OFFLINE),
    )


def statuses(now=None):
    """{name: status} of every environment, in one query of plain values: reading 10,000 environments as model
    instances to ask each its status took 200 ms on SQLite, this takes a few."""
    return dict(Environment.objects.order_by().annotate(current=status_expression(now))
                .values_list("name", "current"))
