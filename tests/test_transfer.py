"""A hosted application's database, dumped and restored engine-native through a transfer in Redis, checked by
SHA-256 (workers.transfer, exchange.transfer): on SQLite, and on PostgreSQL when the run uses it."""

import hashlib
import threading
import time

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model

from exchange import contract, transfer
from workers import provisioning
from workers import transfer as dumps

pytestmark = pytest.mark.django_db(transaction=True)

ON_POSTGRES = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
APP = "movetest"


@pytest.fixture
def app_with_notes():
    provisioning.create_database(APP)
    provisioning.migrate(APP)
    users = get_user_model().objects.db_manager(provisioning.alias(APP))
    for n in range(5):
        users.create(username=f"note{n}", password="!")
    yield APP
    provisioning.drop_database(APP)


def elsewhere(manifest):
    """MANIFEST as a destination on another database server than the source's (this test's) reads it."""
    return dict(manifest, transfer="t1", place="postgresql:another-server/app_movetest")


def usernames():
    return sorted(get_user_model().objects.db_manager(provisioning.connect(APP)).values_list("username", flat=True))


def test_dump_then_load_restores_every_row_on_the_runs_engine(app_with_notes, r):
    manifest = dumps.dump(APP, "t1", r)
    assert manifest["engine"] == (contract.POSTGRES_ENGINE if ON_POSTGRES else contract.SQLITE_ENGINE)
    assert manifest["size"] > 0 and manifest["chunks"] == r.llen(contract.transfer_key("t1"))
    provisioning.drop_database(APP)  # the destination starts without it
    dumps.load(APP, elsewhere(manifest), r)
    assert usernames() == [f"note{n}" for n in range(5)]


def test_load_replaces_a_database_left_on_the_destination(app_with_notes, r):
    manifest = dumps.dump(APP, "t1", r)
    get_user_model().objects.db_manager(provisioning.connect(APP)).create(username="stale", password="!")
    dumps.load(APP, elsewhere(manifest), r)
    assert "stale" not in usernames()


def test_a_destination_sharing_the_sources_database_keeps_it_as_it_is(app_with_notes, r):
    manifest = dumps.dump(APP, "t1", r)
    get_user_model().objects.db_manager(provisioning.connect(APP)).create(username="written-since", password="!")
    loaded = dumps.load(APP, dict(manifest, transfer="t1"), r)
    assert loaded["shared"] is True
    assert "written-since" in usernames()


def test_a_corrupted_transfer_is_refused_and_nothing_is_restored(app_with_notes, r):
    manifest = dumps.dump(APP, "t1", r)
    key = contract.transfer_key("t1")
    chunk = r.lindex(key, 0)
    r.lset(key, 0, bytes([chunk[0] ^ 1]) + chunk[1:])  # same size, one bit changed
    get_user_model().objects.db_manager(provisioning.connect(APP)).create(username="kept", password="!")
    with pytest.raises(transfer.TransferRefused, match="SHA-256"):
        dumps.load(APP, elsewhere(manifest), r)
    assert "kept" in usernames()


def test_a_truncated_or_expired_transfer_is_refused(app_with_notes, r, tmp_path):
    manifest = dumps.dump(APP, "t1", r)
    r.rpop(contract.transfer_key("t1"))
    with pytest.raises(transfer.TransferRefused, match="chunks"):
        dumps.load(APP, elsewhere(manifest), r)
    transfer.discard(r, "t1")
    with pytest.raises(transfer.TransferRefused, match="chunks"):
        dumps.load(APP, elsewhere(manifest), r)


def test_a_dump_of_another_engine_is_refused(app_with_notes, r):
    manifest = dumps.dump(APP, "t1", r)
    other = contract.SQLITE_ENGINE if ON_POSTGRES else contract.POSTGRES_ENGINE
    with pytest.raises(dumps.TransferError, match="same engine"):
        dumps.load(APP, dict(elsewhere(manifest), engine=other), r)


def test_an_application_without_a_database_here_cannot_be_dumped(r):
    with pytest.raises(dumps.TransferError, match="no database"):
        dumps.dump("nowhere", "t1", r)


def test_chunks_hold_the_file_in_order_with_its_sha256(tmp_path, r):
    source = tmp_path / "source"
    data = bytes(range(256)) * 1000  # 256,000 bytes: 26 chunks of 10,000, the last one short
    source.write_bytes(data)
    sent = transfer.upload(r, "t2", source, chunk_bytes=10_000)
    assert sent == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "chunks": 26}
    assert 0 < r.ttl(contract.transfer_key("t2")) <= contract.TRANSFER_TTL
    target = tmp_path / "target"
    transfer.download(r, "t2", target, **sent)
    assert target.read_bytes() == data
    with pytest.raises(transfer.TransferRefused, match="bytes"):
        transfer.download(r, "t2", target, sent["sha256"], sent["size"] - 1, sent["chunks"])


def test_an_open_file_is_pushed_as_its_path_would_be(tmp_path, r):
    source = tmp_path / "source"
    source.write_bytes(b"0123456789" * 3000)
    with open(source, "rb") as opened:
        sent = transfer.upload(r, "t2", opened, chunk_bytes=1000)
        assert not opened.closed  # the caller's to close
    assert sent == transfer.upload(r, "t3", source, chunk_bytes=1000)
    assert r.lrange(contract.transfer_key("t2"), 0, -1) == r.lrange(contract.transfer_key("t3"), 0, -1)


class Failing:
    """A file whose read fails after it gave CHUNKS chunks of SIZE bytes, or that does what BEFORE_FIRST says on its
    first read."""

    def __init__(self, chunks=None, before_first=None):
        self.left, self.before_first = chunks, before_first

    def read(self, size):
        if self.before_first is not None:
            first, self.before_first = self.before_first, None
            first()
        if self.left == 0:
            raise OSError("the storage went away mid-read")
        if self.left is not None:
            self.left -= 1
        return b"x" * size


def readers_left():
    return [t for t in threading.enumerate() if t.name == "read-ahead"]


def test_a_source_that_fails_mid_read_fails_the_upload_and_leaves_no_reader(r):
    with pytest.raises(OSError, match="went away"):
        transfer.upload(r, "t2", Failing(chunks=20), chunk_bytes=1000)
    assert not readers_left()


def test_a_redis_error_while_pushing_stops_the_reader_ahead(r):
    import redis as redis_lib

    # Someone else's value under the transfer's name once the upload has begun: every push is refused.
    plant = Failing(before_first=lambda: r.set(contract.transfer_key("t2"), "not a list"))
    began = time.monotonic()
    with pytest.raises(redis_lib.ResponseError, match="WRONGTYPE"):
        transfer.upload(r, "t2", plant, chunk_bytes=1000)  # an endless file: the reader would read on forever
    assert not readers_left()
    assert time.monotonic() - began < 5


def push_slowly(r, name, data, chunk_bytes, pause=0.01, halfway=None):
    """A source pushing DATA one chunk at a time, pausing between them, in a thread; returns the thread. HALFWAY: an
    event it waits for after half the chunks."""
    key = contract.transfer_key(name)
    starts = range(0, len(data), chunk_bytes)

    def push():
        for n, start in enumerate(starts):
            if halfway is not None and n == len(starts) // 2:
                halfway.wait(10)
            r.rpush(key, data[start:start + chunk_bytes])
            time.sleep(pause)

    thread = threading.Thread(target=push)
    thread.start()
    return thread


def test_a_follower_reads_the_chunks_while_they_are_pushed_and_checks_them_at_the_end(tmp_path, r):
    data = bytes(range(256)) * 400  # 102,400 bytes: 11 chunks of 10,000, the last one short
    target = tmp_path / "target"
    follower = transfer.Follower(r, "t4", target)
    halfway = threading.Event()
    pushing = push_slowly(r, "t4", data, 10_000, halfway=halfway)
    deadline = time.monotonic() + 10
    while follower._reading.chunks < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert follower._reading.chunks == 5  # every chunk pushed so far is read already, before the source is done
    halfway.set()
    pushing.join()
    follower.finish(hashlib.sha256(data).hexdigest(), len(data), 11)
    assert target.read_bytes() == data


def test_a_follower_refuses_bytes_changed_missing_or_added_in_redis(tmp_path, r):
    data = b"x" * 50_000
    sha = hashlib.sha256(data).hexdigest()
    changed = transfer.Follower(r, "t5", tmp_path / "a")
    push_slowly(r, "t5", b"y" + data[1:], 10_000, pause=0).join()
    with pytest.raises(transfer.TransferRefused, match="SHA-256"):
        changed.finish(sha, len(data), 5)

    missing = transfer.Follower(r, "t6", tmp_path / "b")
    push_slowly(r, "t6", data[:40_000], 10_000, pause=0).join()
    with pytest.raises(transfer.TransferRefused, match="has 4 chunks in Redis, the source wrote 5"):
        missing.finish(sha, len(data), 5)

    added = transfer.Follower(r, "t7", tmp_path / "c")
    push_slowly(r, "t7", data + b"z", 10_000, pause=0).join()
    # Which check catches it depends on whether the extra chunk was read before the answer: either refuses it.
    with pytest.raises(transfer.TransferRefused, match="holds more (chunks|than the 50000 bytes)"):
        added.finish(sha, len(data), 5)

    nonsense = transfer.Follower(r, "t8", tmp_path / "d")
    with pytest.raises(transfer.TransferRefused, match="no count of chunks"):
        nonsense.finish(sha, len(data), "5")
    assert not nonsense._thread.is_alive()


def test_an_abandoned_follower_stops_reading(tmp_path, r):
    follower = transfer.Follower(r, "t9", tmp_path / "target")
    follower.abandon()
    assert not follower._thread.is_alive()


@pytest.mark.skipif(ON_POSTGRES, reason="a SQLite database file and its journal")
def test_a_loaded_sqlite_database_replaces_the_file_and_its_stale_journal(app_with_notes, r):
    manifest = dumps.dump(APP, "t1", r)
    path = provisioning.sqlite_path(APP)
    get_user_model().objects.db_manager(provisioning.connect(APP)).create(username="stale", password="!")
    provisioning.disconnect(APP)
    # A journal left by a writer killed mid-transaction: rolled into the loaded file, it would corrupt it.
    journal = path.with_name(path.name + "-journal")
    journal.write_bytes(b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7" + b"\0" * 4096)
    dumps.load(APP, elsewhere(manifest), r)
    assert not journal.exists()
    assert usernames() == [f"note{n}" for n in range(5)]
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".load-")] == []  # no scratch left
