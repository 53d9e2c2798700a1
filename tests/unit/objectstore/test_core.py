"""What the objectstore's processes share and how its hot-path statements survive: a bucket change
made by one process is seen by every other at once, a PUT that finds its own row replaced
nothing, and a pooled connection the database dropped costs a retry, not a failed request."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest
import sqlalchemy as sa

from fabric import config
from fabric.api.bootstrap import bootstrap
from fabric.objectstore import metadata
from fabric.objectstore.core import Objectstore
from fabric.objectstore.errors import S3Error
from tests.fixtures.processes import wait_until


def _processes(db, tmp_path) -> tuple[Objectstore, Objectstore]:
    """Two Objectstores on one storage directory: what two serving processes hold."""
    settings = config.Settings().replace(objectstore={"storage_dir": str(tmp_path / "objects")})
    return Objectstore.from_settings(settings, db), Objectstore.from_settings(settings, db)


def _bucket(db, name: str = "shared-bucket") -> metadata.BucketInfo:
    ids = bootstrap(db, "pw")
    metadata.create_bucket(db, name, ids["project_id"], ids["user_id"], "private")
    return metadata.get_bucket(db, name)


def test_a_bucket_change_by_one_process_is_seen_by_another_at_once(sqlite_db, tmp_path):
    first, second = _processes(sqlite_db, tmp_path)
    bucket = _bucket(sqlite_db)
    assert first.lookup_bucket(bucket.name).acl == "private"  # cached by the first process
    metadata.set_bucket_acl(sqlite_db, bucket, "public-read")
    second.forget_bucket(bucket.name)  # what the second process does after its change
    assert first.lookup_bucket(bucket.name).acl == "public-read"
    metadata.delete_bucket(sqlite_db, bucket)
    second.forget_bucket(bucket.name)
    with pytest.raises(S3Error) as raised:
        first.lookup_bucket(bucket.name)
    assert raised.value.code == "NoSuchBucket"


def test_an_unchanged_bucket_is_read_from_the_cache(sqlite_db, tmp_path):
    first, _ = _processes(sqlite_db, tmp_path)
    bucket = _bucket(sqlite_db)
    first.lookup_bucket(bucket.name)
    with sqlite_db.begin() as session:  # behind the objectstore's back: no stamp written
        session.execute(sa.text("UPDATE s3_buckets SET acl = 'public-read'"))
    assert first.lookup_bucket(bucket.name).acl == "private"


def _values(blob: str) -> dict:
    return {"blob": blob, "size": 1, "etag": "e", "content_type": "binary/octet-stream", "meta": {},
            "checksum_algorithm": None, "checksum_value": None, "checksum_type": None}


@pytest.fixture
def released(db):
    """``db``, with the connections the objectstore's statements kept open closed after the test."""
    yield db
    metadata.release(db)


def test_a_put_that_finds_its_own_row_replaced_nothing(released):
    db = released
    bucket = _bucket(db)
    assert metadata.put_object(db, bucket, b"key", _values("blob-1")) is None
    # The INSERT ran again after its connection was lost, and the first run had committed.
    assert metadata.put_object(db, bucket, b"key", _values("blob-1")) is None
    assert metadata.put_object(db, bucket, b"key", _values("blob-2")) == "blob-1"
    assert metadata.get_object(db, bucket.id, b"key").blob == "blob-2"


def test_connections_the_database_dropped_cost_one_retry_not_the_request(postgres_db, caplog):
    bucket = _bucket(postgres_db)
    held = metadata._held(postgres_db)
    try:
        # Three connections kept open between statements, as after three concurrent requests.
        connections = [held.take() for _ in range(3)]
        for connection in connections:
            connection.run(sa.text("SELECT 1"), {}, True)
            held.give_back(connection)
        with postgres_db.engine.connect() as connection:
            killed = connection.execute(sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
        assert killed >= 3
        caplog.set_level(logging.INFO, logger="fabric.db.retry")
        assert metadata.get_bucket(postgres_db, bucket.name) == bucket
        # The first lost connection drops the other two as well: one retry, not three.
        assert "after 1 failed attempt(s)" in caplog.text
        assert metadata.put_object(postgres_db, bucket, b"after", _values("blob-3")) is None
    finally:
        metadata.release(postgres_db)


def test_rows_that_arrive_while_a_group_is_written_go_together_in_the_next():
    """Group commit: the rows queued while a group is being written are written as one group."""
    groups: list[list[int]] = []
    first_running, release = threading.Event(), threading.Event()

    def write(rows):
        groups.append([row["n"] for row in rows])
        if len(groups) == 1:
            first_running.set()
            release.wait(10)
        return True

    committer = metadata.GroupCommit(write)
    results = {}
    threads = [threading.Thread(target=lambda n=n: results.__setitem__(n, committer.insert({"n": n})))
               for n in range(5)]
    threads[0].start()
    assert first_running.wait(10)
    for thread in threads[1:]:
        thread.start()
    wait_until(lambda: len(committer._queue) == 4, timeout=10, what="four rows queued behind the first group")
    release.set()
    for thread in threads:
        thread.join(10)
    assert groups == [[0], [1, 2, 3, 4]]
    assert results == {n: True for n in range(5)}


def test_a_group_writes_every_row_with_its_own_values(released):
    """One group, rows with and without checksums and metadata: each row reads back as it was given
    (PostgreSQL writes a group as one array per column, the other backends as a VALUES list)."""
    db = released
    bucket = _bucket(db)
    when = metadata.utcnow().replace(microsecond=123456)
    rows = [dict(_values(f"blob-{n}"), bucket_id=bucket.id, key=key, last_modified=when, size=n) for n, key in
            enumerate([b"plain", "caf\u00e9/\u00fcber".encode(), b"\xff\x00binary"])]
    rows[1].update(meta={"user": {"colour": "blue"}, "headers": {"cache-control": "no-cache"}},
                   checksum_algorithm="CRC32", checksum_value="AAAAAA==", checksum_type="FULL_OBJECT")
    assert metadata._write_group(db, rows) is True
    for row in rows:
        stored = metadata.get_object(db, bucket.id, row["key"])
        assert (stored.blob, stored.size, stored.meta, stored.checksum_algorithm, stored.checksum_value,
                stored.checksum_type, stored.last_modified) == (row["blob"], row["size"], row["meta"],
                                                                row["checksum_algorithm"], row["checksum_value"],
                                                                row["checksum_type"], when)


def test_a_group_that_fails_leaves_each_row_to_the_one_row_path(released):
    db = released
    bucket = _bucket(db)
    assert metadata.put_object(db, bucket, b"old", _values("blob-old")) is None
    committer = metadata.group_commit(db)
    rows = [dict(_values(f"blob-{n}"), bucket_id=bucket.id, key=key, last_modified=metadata.utcnow())
            for n, key in enumerate([b"new", b"old"])]
    assert metadata._write_group(db, rows) is False  # "old" exists: the whole group is refused
    assert metadata.get_object(db, bucket.id, b"new") is None  # ... and nothing of it was written
    groups = committer.groups
    assert metadata.put_object(db, bucket, b"old", _values("blob-2")) == "blob-old"
    assert metadata.put_object(db, bucket, b"new", _values("blob-3")) is None
    assert committer.groups == groups + 2
    assert metadata.get_object(db, bucket.id, b"old").blob == "blob-2"
    assert metadata.get_object(db, bucket.id, b"new").blob == "blob-3"



def _one_group(db, count: int) -> metadata.GroupCommit:
    """``db``'s group commit, with its first group held until ``count`` rows wait behind it, so
    that those go as one group."""
    committer = metadata.group_commit(db)
    write, first = committer._write, threading.Event()

    def held(rows):
        if not first.is_set():
            first.set()
            wait_until(lambda: len(committer._queue) >= count, timeout=10, what=f"{count} rows queued")
        return write(rows)

    committer._write = held
    return committer


def test_a_row_that_fails_in_a_group_fails_only_its_own_put(postgres_db):
    """One group holding new keys, an overwrite and a row of a bucket deleted meanwhile: the new
    keys are written, the overwrite replaces, only the deleted bucket's PUT fails."""
    db = postgres_db
    try:
        bucket = _bucket(db)
        gone = _bucket(db, "deleted-meanwhile")
        metadata.delete_bucket(db, gone)
        assert metadata.put_object(db, bucket, b"old", _values("blob-old")) is None
        committer = _one_group(db, 4)
        groups = committer.groups
        puts = [(bucket, b"first", "blob-1"), (bucket, b"new-1", "blob-2"), (bucket, b"old", "blob-3"),
                (gone, b"lost", "blob-4"), (bucket, b"new-2", "blob-5")]
        results: dict[str, object] = {}

        def put(target, key, blob):
            try:
                results[blob] = metadata.put_object(db, target, key, _values(blob))
            except S3Error as err:
                results[blob] = err.code

        threads = [threading.Thread(target=put, args=args) for args in puts]
        for thread in threads:
            thread.start()
            time.sleep(0.05)  # the first leads a group of its own, the others queue behind it
        for thread in threads:
            thread.join(20)
        assert committer.groups >= groups + 2
        assert results == {"blob-1": None, "blob-2": None, "blob-3": "blob-old", "blob-4": "NoSuchBucket",
                           "blob-5": None}
        assert {key: metadata.get_object(db, bucket.id, key).blob for key in (b"first", b"new-1", b"old", b"new-2")} \
            == {b"first": "blob-1", b"new-1": "blob-2", b"old": "blob-3", b"new-2": "blob-5"}
    finally:
        metadata.release(db)


def test_concurrent_puts_of_one_key_end_whole_old_or_whole_new(postgres_db):
    """Eight PUTs of one key at once: the key ends naming one of them, and every other blob was
    replaced exactly once (handed back for removal), so none is lost or removed twice."""
    db = postgres_db
    try:
        bucket = _bucket(db)
        assert metadata.put_object(db, bucket, b"key", _values("blob-0")) is None
        replaced: list[str | None] = []
        threads = [threading.Thread(target=lambda n=n: replaced.append(
            metadata.put_object(db, bucket, b"key", dict(_values(f"blob-{n}"), size=n))))
            for n in range(1, 9)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        final = metadata.get_object(db, bucket.id, b"key")
        assert final.size == int(final.blob.split("-")[1])  # the row is one PUT's, whole
        assert sorted(replaced + [final.blob]) == sorted(f"blob-{n}" for n in range(9))
    finally:
        metadata.release(db)


def test_a_crash_between_the_fsyncs_and_commit_leaves_no_row_and_recovery_removes_the_blob(sqlite_db, tmp_path):
    service, _ = _processes(sqlite_db, tmp_path)
    bucket = _bucket(sqlite_db)
    with service.store.writer() as writer:
        writer.write(b"kept")
        kept = writer.commit()
    assert metadata.put_object(sqlite_db, bucket, b"kept", _values(kept)) is None
    with service.store.writer() as writer:
        writer.write(b"written and synced, its row never committed")
        orphan = writer.commit()  # the process dies here, before metadata.put_object
    assert metadata.referenced_blobs(sqlite_db) == {kept}
    assert service.recover() == (0, 1)
    assert os.path.exists(service.store.path(kept)) and not os.path.exists(service.store.path(orphan))
