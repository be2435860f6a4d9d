"""One acting controller among several: a Redis lock with a short TTL that its holder renews every pass (the
leader election of Kubernetes' controllers). A holder that dies or loses Redis stops renewing, and another
controller takes over once the lease expires. Its value is signed (exchange.locks): a value planted by someone
without the supervisor's key is broken, not obeyed."""

import os
import socket
import uuid

from redis.exceptions import LockError

from exchange.contract import CONTROLLER_LEASE_KEY, LEASE_LOCK
from exchange.locks import SignedLock, holder_of

# Long enough to survive a slow pass, short enough that a standby takes over quickly.
LEASE_TTL = 10


def holder_id():
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    def __init__(self, redis, holder=None, ttl=LEASE_TTL):
        self.holder = holder or holder_id()
        self.lock = SignedLock(redis, CONTROLLER_LEASE_KEY, LEASE_LOCK, timeout=ttl, thread_local=False)
        self.held = False

    def hold(self):
        """Acquire the lease, or renew it if it is this controller's. Returns whether it holds it now.

        Renewed whenever Redis still names this holder, even after ``held`` was dropped (a Redis error makes the
        controller stop acting): it acts again as soon as Redis answers, rather than waiting for its own lease to
        expire. The renewal is atomic (the lock's token is compared in Redis), so a lease taken over meanwhile is
        never taken back. A forged holder value is broken as the lease is acquired."""
        if self.lock.local.token is not None:  # acquired once and not released: maybe still ours
            try:
                self.lock.reacquire()
                self.held = True
                return True
            except LockError:  # expired, taken over, or lost with Redis's data: compete again
                pass
        self.held = bool(self.lock.acquire(blocking=False, token=self.holder))
        return self.held

    def release(self):
        if self.held:
            self.held = False
            try:
                self.lock.release()
            except LockError:
                pass

    def current_holder(self):
        """The genuine holder named in Redis, or None (no lease, or a forged one)."""
        return holder_of(self.lock.redis.get(CONTROLLER_LEASE_KEY), CONTROLLER_LEASE_KEY)
