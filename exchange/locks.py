"""Locks in Redis whose holder value is signed (docs/architecture.md, "Trust"): the controller lease and the
applications' lifecycle locks.

A plain Redis lock is held by whoever writes its key: anyone who can write to Redis could stop every controller
with ``SET appsup:controller-lease x`` renewed now and then, or make an operator's commands answer 423 by planting an
application's lock. Here a holder's value is ``signing.dumps({"lock": key, "holder": token, "until": epoch s})``,
rewritten with a later ``until`` at each renewal. A value that does not verify, names another key, or is past its
``until`` (a genuine value replayed) is a forgery: whoever wants the lock breaks it (deleted only if it is still
that very value, atomically), logs it, counts it (contract.FORGED_LOCKS_KEY), and takes the lock.

Otherwise redis-py's Lock semantics hold: acquire by SET NX PX, release and renew only while the stored value is
still this holder's (compared in Redis).
"""

import logging
import time
import uuid

from redis.exceptions import LockNotOwnedError
from redis.lock import Lock

from . import signing
from .contract import FORGED_LOCK_KINDS, FORGED_LOCKS_KEY, provision_lock_key

log = logging.getLogger("appsup.locks")

# A genuine holder's clock may run behind this one by this much.
CLOCK_SKEW = 5.0
# Breaking forgeries is bounded per acquire: someone planting values as fast as they are broken still costs a few
# round trips, never a busy loop.
BREAKS_PER_TRY = 3

_BREAK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_RENEW = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
          "redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end return 0")


def signers_of(key):
    """Who may hold lock KEY: an application's database lock is taken by whichever worker starts it (they share a
    database server); the controller lease and the applications' lifecycle locks by the supervisor only."""
    return None if key.startswith(provision_lock_key("")) else (signing.SUPERVISOR,)


def holder_of(raw, key, now=None):
    """The holder RAW (a lock's stored value) names when it is a genuine value of lock KEY (signed by one who may
    hold it, signers_of), else None."""
    value = signing.loads_or_none(raw, signers_of(key))
    if not isinstance(value, dict) or value.get("lock") != key or not isinstance(value.get("holder"), str):
        return None
    until = value.get("until")
    if not isinstance(until, (int, float)) or isinstance(until, bool):
        return None
    now = time.time() if now is None else now
    return value["holder"] if until + CLOCK_SKEW > now else None


def forgeries(redis):
    """{lock kind: how many forged values were broken}, for the kinds of contract.FORGED_LOCK_KINDS."""
    counts = {}
    for kind, count in redis.hgetall(FORGED_LOCKS_KEY).items():
        kind = kind.decode(errors="replace")
        if kind in FORGED_LOCK_KINDS and count.isdigit():
            counts[kind] = int(count)
    return counts


def release_if_held_by(redis, key, holder):
    """Delete lock KEY if a genuine value of it names HOLDER (a holder known to be dead), never another holder's
    (compared and deleted in one step). Returns whether it did."""
    raw = redis.get(key)
    if raw is None or holder_of(raw, key) != holder:
        return False
    return bool(redis.eval(_BREAK, 1, key, raw))


class SignedLock(Lock):
    """redis-py's Lock, with a signed holder value that is rewritten at each renewal. KIND (one of
    contract.FORGED_LOCK_KINDS) names the lock in the count of forgeries broken."""

    def __init__(self, redis, name, kind, timeout, **kwargs):
        super().__init__(redis, name, timeout=timeout, **kwargs)
        self.kind = kind
        self.holder = None

    def _value(self, holder):
        key = self.name.decode() if isinstance(self.name, bytes) else self.name
        return signing.dumps({"lock": key, "holder": holder, "until": time.time() + self.timeout})

    def acquire(self, sleep=None, blocking=None, blocking_timeout=None, token=None):
        """As Lock.acquire; TOKEN names the holder (a random one by default)."""
        holder = token.decode() if isinstance(token, bytes) else (token or uuid.uuid4().hex)
        sleep = self.sleep if sleep is None else sleep
        blocking = self.blocking if blocking is None else blocking
        blocking_timeout = self.blocking_timeout if blocking_timeout is None else blocking_timeout
        stop_at = None if blocking_timeout is None else time.monotonic() + blocking_timeout
        while True:
            for _ in range(BREAKS_PER_TRY):
                value = self._value(holder)
                if self.do_acquire(value):
                    self.local.token = value
                    self.holder = holder
                    return True
                if not self.break_forgery():
                    break
            if not blocking or (stop_at is not None and time.monotonic() + sleep > stop_at):
                return False
            time.sleep(sleep)

    def break_forgery(self):
        """Delete the lock's value if it is not a genuine holder's. Returns whether the lock may be free now."""
        raw = self.redis.get(self.name)
        if raw is None:
            return True  # expired or released meanwhile
        key = self.name.decode() if isinstance(self.name, bytes) else self.name
        if holder_of(raw, key) is not None:
            return False
        if not self.redis.eval(_BREAK, 1, self.name, raw):
            return True  # changed meanwhile: look again
        log.warning("lock %s: its value does not verify (not written with this deployment's an allowed signer's key, or "
                    "replayed): broken; someone who can write to Redis planted it", key)
        self.redis.hincrby(FORGED_LOCKS_KEY, self.kind, 1)
        return True

    def _own_value(self):
        """The value stored for this lock when it is a genuine one naming this holder, else None. Not necessarily
        the one this process last wrote: a renewal that timed out here (a hung Redis) may have been carried out by
        Redis once it resumed, and is this holder's all the same."""
        raw = self.redis.get(self.name)
        key = self.name.decode() if isinstance(self.name, bytes) else self.name
        return raw if raw is not None and self.holder is not None and holder_of(raw, key) == self.holder else None

    def do_reacquire(self):
        current = self._own_value()
        value = self._value(self.holder)
        # Compared with what is stored now, in Redis: never another holder's lock, taken over meanwhile.
        if current is None or not self.redis.eval(_RENEW, 1, self.name, current, value, int(self.timeout * 1000)):
            raise LockNotOwnedError("Cannot reacquire a lock that's no longer owned", lock_name=self.name)
        self.local.token = value
        return True

    def do_release(self, expected_token):
        current = self._own_value()
        if current is None or not self.redis.eval(_BREAK, 1, self.name, current):
            raise LockNotOwnedError("Cannot release a lock that's no longer owned", lock_name=self.name)

    def extend(self, additional_time, replace_ttl=False):
        raise NotImplementedError("a signed lock is renewed with reacquire(), which also renews its signed value")
