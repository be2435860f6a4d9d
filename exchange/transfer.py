"""Transfers: the bytes of a database dump on their way from one environment to another during a move
(docs/architecture.md, "Moving an application").

Environments share no filesystem, and may not reach each other: the dump goes through Redis, the one thing both
sides reach. The source worker pushes the dump file onto a list (contract.transfer_key) one chunk at a time
(contract.TRANSFER_CHUNK_BYTES) while it hashes it; the destination reads it back one chunk at a time into a file
while it hashes it, and refuses it unless size and SHA-256 are the ones the source reported. Neither side holds
more than a chunk in memory. The list expires (contract.TRANSFER_TTL) and the supervisor deletes it once the move
ends, so a dump does not outlive its move.

The chunks are not signed: the SHA-256 the destination checks comes from the source's signed answer, carried in
the signed load command, so bytes changed in Redis are refused like bytes damaged on the way.
"""

import hashlib

from . import contract


class TransferRefused(Exception):
    """The bytes read back are not the ones the source wrote (missing, truncated, changed)."""


def upload(redis, transfer, path, chunk_bytes=None):
    """Push the file PATH as TRANSFER's chunks; returns ``{"sha256", "size", "chunks"}``."""
    chunk_bytes = chunk_bytes or contract.TRANSFER_CHUNK_BYTES
    key = contract.transfer_key(transfer)
    digest, size, chunks = hashlib.sha256(), 0, 0
    redis.delete(key)
    with open(path, "rb") as source:
        while chunk := source.read(chunk_bytes):
            digest.update(chunk)
            size += len(chunk)
            chunks += 1
            pipe = redis.pipeline()
            pipe.rpush(key, chunk)
            pipe.expire(key, contract.TRANSFER_TTL)
            pipe.execute()
    return {"sha256": digest.hexdigest(), "size": size, "chunks": chunks}


def download(redis, transfer, path, sha256, size, chunks):
    """Write TRANSFER's chunks to the file PATH, or raise TransferRefused unless they are exactly CHUNKS chunks of
    SIZE bytes in all whose SHA-256 is SHA256 (hex)."""
    key = contract.transfer_key(transfer)
    stored = redis.llen(key)
    if stored != chunks:
        raise TransferRefused(f"transfer {transfer} has {stored} chunks in Redis, the source wrote {chunks} "
                              "(expired, deleted or tampered with)")
    digest, written = hashlib.sha256(), 0
    with open(path, "wb") as target:
        for index in range(chunks):
            chunk = redis.lindex(key, index)
            if chunk is None:
                raise TransferRefused(f"transfer {transfer} lost its chunk {index} while it was read")
            digest.update(chunk)
            written += len(chunk)
            if written > size:
                raise TransferRefused(f"transfer {transfer} holds more than the {size} bytes the source wrote")
            target.write(chunk)
    if written != size:
        raise TransferRefused(f"transfer {transfer} holds {written} bytes, the source wrote {size}")
    if digest.hexdigest() != sha256:
        raise TransferRefused(f"transfer {transfer} does not match the source's SHA-256 (sha256 {digest.hexdigest()}, "
                              f"expected {sha256}): refused, nothing restored")


def discard(redis, transfer):
    redis.delete(contract.transfer_key(transfer))
