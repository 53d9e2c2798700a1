"""Small blobs packed into shared segments: durable before named, one sync for concurrent
appends, readable whole or in ranges, reclaimed (holes punched, sealed segments unlinked) only
after the grace period, and what a crash left unnamed punched at recovery."""

from __future__ import annotations

import os
import threading
import time

import pytest

from fabric.objectstore import segments, storage
from fabric.objectstore.storage import BlobStore
from tests.fixtures.processes import wait_until

KIB64 = 64 * 1024


@pytest.fixture
def store(tmp_path) -> BlobStore:
    return BlobStore(tmp_path / "objects")


def put(store: BlobStore, data: bytes) -> str:
    with store.writer(packed=True) as writer:
        writer.write(data)
        return writer.commit()


def segment_files(store: BlobStore) -> list[str]:
    return sorted(entry.name for entry in os.scandir(store.segment_dir))


def allocated(store: BlobStore, blob_id: str) -> int:
    """Bytes the filesystem holds for the segment of ``blob_id``."""
    return os.stat(store.segments.path(segments.parse(blob_id)[0])).st_blocks * 512


def data_ranges(path: str) -> list[tuple[int, int]]:
    """(start, end) of each stretch of a file that holds data (not a hole)."""
    found, offset = [], 0
    with open(path, "rb") as file:
        while True:
            try:
                start = os.lseek(file.fileno(), offset, os.SEEK_DATA)
            except OSError:  # ENXIO: only holes past offset
                return found
            offset = os.lseek(file.fileno(), start, os.SEEK_HOLE)
            found.append((start, offset))


def test_a_small_blob_is_packed_and_read_back_whole_and_in_ranges(store):
    data = os.urandom(KIB64 + 123)
    blob = put(store, data)
    assert segments.is_packed(blob)
    assert not [p for p in store.blob_dir.rglob("*") if p.is_file()]  # no file of its own
    assert store.read(store.open(blob, time.monotonic()), 0, len(data)) == data
    assert store.read(store.open(blob), 1000, 10) == data[1000:1010]
    assert b"".join(store.stream(store.open(blob), KIB64, 1000)) == data[KIB64:]
    assert store.size(store.open(blob)) == len(data)


def test_empty_and_oversized_blobs_keep_their_own_files(store):
    assert not segments.is_packed(put(store, b""))
    with store.writer(packed=True) as writer:
        writer.write(b"x" * (segments.PACK_MAX + 1))
        assert not segments.is_packed(writer.commit())
    assert segment_files(store) == []


def test_records_start_on_block_boundaries_in_one_segment(store):
    blobs = [put(store, os.urandom(size)) for size in (1, 5000, KIB64)]
    places = [segments.parse(blob) for blob in blobs]
    assert len({segment for segment, _, _ in places}) == 1
    assert [offset for _, offset, _ in places] == [0, 4096, 3 * 4096]


def test_concurrent_puts_share_their_writes_and_syncs(monkeypatch, store):
    real = os.fdatasync
    syncs = []

    def slow_fdatasync(fd):
        syncs.append(fd)
        time.sleep(0.05)  # long enough for the other threads to queue behind the running round
        real(fd)

    monkeypatch.setattr(os, "fdatasync", slow_fdatasync)
    blobs: dict[int, str] = {}

    def one(n: int) -> None:
        blobs[n] = put(store, b"%d" % n * 1000)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(blobs) == 16
    assert store.segments.rounds == len(syncs) < 16
    for n, blob in blobs.items():
        assert store.read(store.open(blob), 0, 10_000) == b"%d" % n * 1000


def test_a_failed_sync_fails_its_round_and_the_next_append_uses_a_new_segment(monkeypatch, store):
    first = put(store, b"before")
    real = os.fdatasync

    def failing(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(OSError):
        put(store, b"lost")
    monkeypatch.setattr(os, "fdatasync", real)
    after = put(store, b"after")
    assert segments.parse(after)[0] != segments.parse(first)[0]
    assert store.read(store.open(after), 0, 5) == b"after"
    assert store.read(store.open(first), 0, 6) == b"before"


def test_a_reader_of_a_removed_blob_reads_it_whole_within_the_grace_and_never_after(monkeypatch, store):
    monkeypatch.setattr(segments, "GRACE_SECONDS", 0.3)
    old = put(store, b"old" * 20000)
    named_at = time.monotonic()  # the reader read the row naming the old blob
    new = put(store, b"new" * 20000)
    store.remove([old])  # the overwrite's row switched: the old record is released
    assert store.read(store.open(old, named_at), 0, 60000) == b"old" * 20000  # within the grace: whole
    wait_until(lambda: allocated(store, new) < 2 * 61440, timeout=10, what="the old record punched")
    with pytest.raises(FileNotFoundError):  # too late to be sure of the bytes: read the row again
        store.open(old, named_at)
    assert store.read(store.open(new, time.monotonic()), 0, 60000) == b"new" * 20000


def test_a_removed_blob_gives_its_blocks_back_and_a_sealed_empty_segment_goes(monkeypatch, store):
    monkeypatch.setattr(segments, "GRACE_SECONDS", 0.05)
    monkeypatch.setattr(segments, "SEGMENT_MAX", 3 * KIB64)
    data = [os.urandom(KIB64) for _ in range(4)]
    blobs = [put(store, piece) for piece in data]
    first_segment = segments.parse(blobs[0])[0]
    assert [segments.parse(blob)[0] for blob in blobs] == [first_segment] * 3 + [segments.parse(blobs[3])[0]]
    assert allocated(store, blobs[0]) >= 3 * KIB64
    store.remove([blobs[1]])
    wait_until(lambda: allocated(store, blobs[0]) <= 2 * KIB64, timeout=10, what="the hole punched")
    assert [store.read(store.open(blob), 0, KIB64) for blob in (blobs[0], blobs[2])] == [data[0], data[2]]
    store.remove([blobs[0], blobs[2]])
    wait_until(lambda: first_segment not in segment_files(store), timeout=10, what="the sealed segment unlinked")
    assert segment_files(store) == [segments.parse(blobs[3])[0]]  # the current one stays


def test_recovery_punches_what_no_row_names_and_seals_every_segment(store):
    data = [os.urandom(KIB64) for _ in range(2)]
    kept = [put(store, piece) for piece in data]
    for _ in range(3):
        put(store, os.urandom(KIB64))  # the crash came before their rows
    path = store.segments.path(segments.parse(kept[0])[0])
    with open(path, "r+b") as segment:  # and an append cut short: bytes past every record
        segment.seek(0, os.SEEK_END)
        segment.write(os.urandom(10000))
    gone = BlobStore(store.root)  # a new process: another segment, nothing named in it
    gone_blob = put(gone, b"never named")
    assert allocated(store, kept[0]) >= 5 * KIB64 + 8192

    fresh = BlobStore(store.root)
    temporary, orphans = fresh.recover(lambda: set(kept))
    assert temporary == 0 and orphans >= 2  # records and tail punched (one range or more), a segment unlinked
    assert data_ranges(path) == [(0, 2 * KIB64)]
    assert os.stat(path).st_size >= segments.SEGMENT_MAX  # sealed: nothing appends to it again
    assert not os.path.exists(gone.segments.path(segments.parse(gone_blob)[0]))
    assert [fresh.read(fresh.open(blob), 0, KIB64) for blob in kept] == data
    assert BlobStore(store.root).recover(lambda: set(kept)) == (0, 0)  # idempotent
    assert segments.parse(put(fresh, b"later"))[0] != segments.parse(kept[0])[0]


def test_a_packed_blob_linked_becomes_a_file_of_its_own(store):
    blob = put(store, b"copied bytes")
    copy = store.link(blob, time.monotonic())
    assert not segments.is_packed(copy) and os.path.exists(store.path(copy))
    with store.open(copy) as handle:
        assert handle.read() == b"copied bytes"


def test_a_packed_blob_id_is_handed_out_only_after_its_segment_and_directory_are_synced(monkeypatch, store):
    order = []
    real_fdatasync, real_sync_dir = os.fdatasync, storage._sync_dir
    monkeypatch.setattr(os, "fdatasync", lambda fd: (order.append("data"), real_fdatasync(fd)))
    monkeypatch.setattr(storage, "_sync_dir", lambda path: (order.append("directory"), real_sync_dir(path)))
    blob = put(store, b"durable")
    order.append(blob)
    assert order == ["data", "directory", blob]
    put(store, b"second")  # the segment's entry is durable already: only its data is synced
    assert order[3:] == ["data"]
