"""Transfers: the bytes of a database dump on their way from one environment to another during a move
(docs/architecture.md, "Moving an application").

Environments share no filesystem, and may not reach each other: the dump goes through Redis, the one thing both
sides reach. The source worker pushes the dump file onto a list (contract.transfer_key) in chunks
(contract.TRANSFER_CHUNK_BYTES), a batch of them per round trip, while a thread reads and hashes the next batch; the
destination reads it back into a file while it hashes it (a backup's supervisor already while it is pushed:
Follower), and refuses it unless count, size and SHA-256 are the ones the source reported. The source holds two
batches (BATCH chunks each) in memory at most, the destination one. The list expires (contract.TRANSFER_TTL) and the
supervisor deletes it once the move ends, so a dump does not outlive its move.

The chunks are not signed: the SHA-256 the destination checks comes from the source's signed answer, carried in
the signed load command, so bytes changed in Redis are refused like bytes damaged on the way.
"""

import contextlib
import hashlib
import os
import queue
import threading

from . import contract

# Chunks sent or read per round trip to Redis: one round trip per 1 MiB chunk left Redis idle between them (a 100 MB
# dump file took 0.50-0.59 s to push one chunk at a time, 0.34-0.39 s eight at a time).
BATCH = 8


class TransferRefused(Exception):
    """The bytes read back are not the ones the source wrote (missing, truncated, changed)."""


def upload(redis, transfer, source, chunk_bytes=None):
    """Push SOURCE (a file's path, or a file open for reading in binary) as TRANSFER's chunks; returns ``{"sha256",
    "size", "chunks"}``."""
    chunk_bytes = chunk_bytes or contract.TRANSFER_CHUNK_BYTES
    key = contract.transfer_key(transfer)
    digest, size, chunks = hashlib.sha256(), 0, 0
    redis.delete(key)
    with _opened(source) as readable, _read_ahead(readable, chunk_bytes, digest) as read:
        pipe = redis.pipeline(transaction=False)
        for chunk in read:
            size += len(chunk)
            chunks += 1
            pipe.rpush(key, chunk)
            if chunks % BATCH == 0:
                pipe.expire(key, contract.TRANSFER_TTL)
                pipe.execute()
        pipe.expire(key, contract.TRANSFER_TTL)
        pipe.execute()
    return {"sha256": digest.hexdigest(), "size": size, "chunks": chunks}


@contextlib.contextmanager
def _read_ahead(readable, chunk_bytes, digest):
    """READABLE's chunks, read and hashed into DIGEST by a thread of their own while the caller sends the ones before
    (hashlib and file reads let go of the GIL): one after the other, reading, hashing and sending 100 MB took
    0.25-0.28 s, side by side 0.16-0.20 s. A batch is read ahead at most. The reader's error is raised in the
    caller's thread; DIGEST is whole once the chunks are."""
    ahead, stop = queue.Queue(maxsize=BATCH), threading.Event()

    def put(item):
        while not stop.is_set():  # the caller may stop taking (a Redis error): then give up
            try:
                ahead.put(item, timeout=0.1)
                return
            except queue.Full:
                pass

    def read():
        try:
            while not stop.is_set() and (chunk := readable.read(chunk_bytes)):
                digest.update(chunk)
                put(chunk)
            put(None)
        except BaseException as exc:
            put(exc)

    def chunks():
        while (item := ahead.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    reader = threading.Thread(target=read, name="read-ahead", daemon=True)
    reader.start()
    try:
        yield chunks()
    finally:
        stop.set()
        reader.join()


def _opened(source):
    if isinstance(source, (str, os.PathLike)):
        return open(source, "rb")
    return contextlib.nullcontext(source)  # the caller's file: read, not closed


def download(redis, transfer, path, sha256, size, chunks):
    """Write TRANSFER's chunks to the file PATH, or raise TransferRefused unless they are exactly CHUNKS chunks of
    SIZE bytes in all whose SHA-256 is SHA256 (hex)."""
    key = contract.transfer_key(transfer)
    stored = redis.llen(key)
    if stored != chunks:
        raise TransferRefused(f"transfer {transfer} has {stored} chunks in Redis, the source wrote {chunks} "
                              "(expired, deleted or tampered with)")
    reading = _Reading(transfer, size)
    with open(path, "wb") as target:
        for first in range(0, chunks, BATCH):
            batch = redis.lrange(key, first, min(first + BATCH, chunks) - 1)
            if len(batch) != min(BATCH, chunks - first):
                raise TransferRefused(f"transfer {transfer} lost chunks from {first} on while it was read")
            reading.take(batch, target)
    reading.check(sha256, size)


class _Reading:
    """The bytes of a transfer read so far, hashed."""

    def __init__(self, transfer, size=None):
        self.transfer, self.size = transfer, size
        self.digest, self.written, self.chunks = hashlib.sha256(), 0, 0

    def take(self, batch, target):
        for chunk in batch:
            self.digest.update(chunk)
            self.written += len(chunk)
            self.chunks += 1
            if self.size is not None and self.written > self.size:
                raise TransferRefused(f"transfer {self.transfer} holds more than the {self.size} bytes the source "
                                      "wrote")
            target.write(chunk)

    def check(self, sha256, size):
        if self.written != size:
            raise TransferRefused(f"transfer {self.transfer} holds {self.written} bytes, the source wrote {size}")
        if self.digest.hexdigest() != sha256:
            raise TransferRefused(f"transfer {self.transfer} does not match the source's SHA-256 (sha256 "
                                  f"{self.digest.hexdigest()}, expected {sha256}): refused, nothing restored")


class Follower:
    """Reads TRANSFER into the file PATH while its source is still pushing it, so that the bytes are here as soon
    as the source's answer is: a backup of 100 MB took a third longer when they were read only after it. Only
    Redis and the file are touched in its thread. ``finish`` with the source's answer checks them as ``download``
    does; ``abandon`` when there is no answer to check them against."""

    # Seconds between looks at a list with no new chunk: short while chunks come, longer while a big dump is made,
    # but not much longer: backing off to 100 ms, the reader woke late to a push of 100 MB (0.2 s) and ended
    # 0.12-0.19 s after it, where at 20 ms it ends 0.03 s after (a backup's median 0.71 s -> 0.61 s).
    POLL, POLL_MAX = 0.005, 0.02

    def __init__(self, redis, transfer, path):
        self.redis, self.transfer, self.path = redis, transfer, path
        self._reading = _Reading(transfer)
        self._expected = None  # chunks the source says it wrote, once its answer is in
        self._stop = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._follow, name=f"follow-{transfer}", daemon=True)
        self._thread.start()

    def _follow(self):
        key = contract.transfer_key(self.transfer)
        pause = self.POLL
        try:
            with open(self.path, "wb") as target:
                while not self._stop.is_set():
                    expected = self._expected  # read before the look: every chunk was pushed before it was set
                    if expected is not None and self._reading.chunks >= expected:
                        return
                    first = self._reading.chunks
                    batch = self.redis.lrange(key, first, first + BATCH - 1)
                    if expected is not None:
                        batch = batch[:expected - first]
                    if batch:
                        self._reading.take(batch, target)
                        pause = self.POLL
                    elif expected is not None:
                        raise TransferRefused(f"transfer {self.transfer} has {first} chunks in Redis, the source "
                                              f"wrote {expected} (expired, deleted or tampered with)")
                    else:
                        self._stop.wait(pause)
                        pause = min(pause * 2, self.POLL_MAX)
        except BaseException as exc:  # raised again in the caller's thread by finish
            self._error = exc

    def finish(self, sha256, size, chunks):
        """Wait for the last chunk; TransferRefused unless they are CHUNKS chunks, SIZE bytes, SHA256."""
        if not isinstance(chunks, int) or chunks < 0:
            self.abandon()
            raise TransferRefused(f"transfer {self.transfer}: the source's answer gives no count of chunks")
        self._reading.size = size
        self._expected = chunks
        self._thread.join()
        if self._error is not None:
            raise self._error
        held = max(self._reading.chunks, self.redis.llen(contract.transfer_key(self.transfer)))
        if held != chunks:
            raise TransferRefused(f"transfer {self.transfer} holds more chunks than the {chunks} the source wrote "
                                  "(tampered with)")
        self._reading.check(sha256, size)

    def abandon(self):
        self._stop.set()
        self._thread.join()


def discard(redis, transfer):
    redis.delete(contract.transfer_key(transfer))
