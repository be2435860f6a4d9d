"""The sequence number a signed entry carries (``seq``), so that a reader can tell an older value from a newer one.

A signature proves who wrote a value, not when: an old signed status or registration copied back into Redis
verifies as well as the current one. Every writer of statuses and registrations stamps each value with ``new()``,
and every reader remembers the highest it has seen per entry and takes no lower one (exchange.directory, the
supervisor's mirrors).

``new()`` is ``max(time.time_ns(), last + 1)``: strictly increasing within a process, and, being the wall clock in
nanoseconds, above what the writer's previous processes wrote (a restarted agent) with nothing stored anywhere. An
epoch per process start plus a counter would order a process's own writes as well, but would need the epoch kept
somewhere to order one process's against the next. Its limit: a writer whose clock steps back further than the time
since its last write writes lower numbers until the clock catches up (its entries then count as "don't know" for
readers that saw the higher ones; the agent's heartbeat keeps writing until they are taken).

Entries written before ``seq`` existed (a worker of an earlier version, during an upgrade) are still read: their
sequence is their own time in nanoseconds (``of``), which is how they were ordered before.
"""

import math
import threading
import time

KEY = "seq"
# A JSON integer any reader can hold (signed 64 bits).
LIMIT = 2**63

_lock = threading.Lock()
_last = 0


def new():
    """A number above every one this process returned before, and above the clock in nanoseconds."""
    global _last
    with _lock:
        _last = max(time.time_ns(), _last + 1)
        return _last


def valid(value):
    """Whether VALUE may be an entry's ``seq`` (absent included)."""
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value < LIMIT)


def of(entry, *times):
    """ENTRY's sequence: its ``seq``, else (an entry written before there was one) the latest of its TIMES fields
    in nanoseconds, else 0."""
    seq = entry.get(KEY)
    if seq is not None:
        return seq
    stamps = [entry.get(key) for key in times]
    stamps = [s for s in stamps if isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s)]
    return int(max(stamps) * 1e9) if stamps else 0
