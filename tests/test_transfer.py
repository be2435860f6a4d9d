"""A hosted application's database, dumped and restored engine-native through a transfer in Redis, checked by
SHA-256 (workers.transfer, exchange.transfer): on SQLite, and on PostgreSQL when the run uses it."""

import hashlib

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
