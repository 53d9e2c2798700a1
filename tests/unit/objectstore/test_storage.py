"""Blob storage is atomic: nothing is visible until commit, an overwrite is whole-old or whole-new
to a reader, and what a crash leaves (temporary files, blobs without rows) goes at restart.
Files created in one directory share an fsync that began after the last of them."""

from __future__ import annotations

import os
import threading
import time

import pytest

from fabric.objectstore import storage
from fabric.objectstore.storage import BUFFER_MAX, BlobStore


@pytest.fixture
def store(tmp_path) -> BlobStore:
    return BlobStore(tmp_path / "objects")


def blob_files(store: BlobStore) -> set[str]:
    return {p.name for p in store.blob_dir.rglob("*") if p.is_file()}


def test_nothing_is_on_disk_until_the_buffer_fills_and_discard_leaves_nothing(store):
    small = store.writer()
    small.write(b"half an upload")
    assert blob_files(store) == set()  # still in memory
    large = store.writer()
    large.write(b"x" * BUFFER_MAX)
    large.write(b"y")  # past the buffer: streamed to the blob's file (no row names it yet)
    assert blob_files(store) == {large.blob_id}
    small.discard()
    large.discard()
    large.discard()  # idempotent
    assert blob_files(store) == set() and list(store.tmp_dir.iterdir()) == []


def test_an_error_inside_the_writer_block_discards(store):
    with pytest.raises(RuntimeError), store.writer() as writer:
        writer.write(b"x" * (BUFFER_MAX + 1))
        raise RuntimeError("client went away")
    assert blob_files(store) == set()


@pytest.mark.parametrize("size", [100, BUFFER_MAX + 1], ids=["kept in memory", "streamed past the buffer"])
def test_a_committed_blob_outlives_an_error_or_discard_after_its_commit(store, size):
    with pytest.raises(RuntimeError), store.writer() as writer:
        writer.write(b"x" * size)
        blob = writer.commit()
        raise RuntimeError("the row could not be written")  # the caller decides the blob's fate
    writer.discard()
    assert blob_files(store) == {blob}


def test_a_failed_commit_leaves_no_file(monkeypatch, store):
    def failing(path):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(storage, "_sync_dir", failing)
    with pytest.raises(OSError), store.writer() as writer:
        writer.write(b"x" * 100)
        writer.commit()
    assert blob_files(store) == set()


def test_commit_names_the_whole_bytes(store):
    with store.writer() as writer:
        writer.write(b"hello ")
        writer.write(memoryview(b"world"))
        blob = writer.commit()
    assert writer.size == 11 and blob_files(store) == {blob}
    with store.open(blob) as handle:
        assert b"".join(store.stream(handle, 0, 11)) == b"hello world"
    with store.open(blob) as handle:
        assert b"".join(store.stream(handle, 6, 3)) == b"wor"


@pytest.mark.parametrize("pieces", [[b"a" * 1000, b"b" * 24], [os.urandom(BUFFER_MAX // 2 + 7) for _ in range(3)]],
                         ids=["kept in memory", "streamed past the buffer"])
def test_a_blob_small_or_large_holds_the_bytes_written_in_order(store, pieces):
    with store.writer() as writer:
        for piece in pieces:
            writer.write(piece)
        blob = writer.commit()
    expected = b"".join(pieces)
    assert writer.size == len(expected) and blob_files(store) == {blob}
    with store.open(blob) as handle:
        assert handle.read() == expected


def test_the_descriptor_of_a_buffered_blob_holds_what_was_written_before(store):
    with store.writer() as writer:
        writer.write(b"head ")
        os.write(writer.fileno(), b"tail")  # what a kernel-side copy does
        writer.size += 4
        blob = writer.commit()
    with store.open(blob) as handle:
        assert handle.read() == b"head tail"


def test_a_reader_of_the_old_blob_reads_it_whole_after_an_overwrite(store):
    with store.writer() as writer:
        writer.write(b"old" * 1000)
        old = writer.commit()
    handle = store.open(old)
    stream = store.stream(handle, 0, 3000)
    first = next(stream)
    with store.writer() as writer:
        writer.write(b"new" * 1000)
        writer.commit()
    store.remove([old])  # what an overwrite does once the row names the new blob
    assert first + b"".join(stream) == b"old" * 1000
    with pytest.raises(FileNotFoundError):
        store.open(old)


def test_a_link_is_an_independent_copy(store):
    with store.writer() as writer:
        writer.write(b"shared bytes")
        original = writer.commit()
    copy = store.link(original)
    store.remove([original])
    with store.open(copy) as handle:
        assert handle.read() == b"shared bytes"


def test_recover_removes_temporary_files_and_unnamed_blobs_only(store):
    kept, orphan = [], []
    for target in (kept, orphan):
        with store.writer() as writer:
            writer.write(os.urandom(100))
            target.append(writer.commit())
    crashed = store.writer()
    crashed.write(os.urandom(BUFFER_MAX + 1))  # on disk, never committed nor discarded: the process died here
    (store.tmp_dir / "upload-of-an-earlier-version").write_bytes(b"partial")
    removed = store.recover(lambda: set(kept))
    assert removed == (1, 2)
    assert blob_files(store) == set(kept) and list(store.tmp_dir.iterdir()) == []
    assert BlobStore(store.root).recover(lambda: set(kept)) == (0, 0)  # idempotent


def _held_fsync(monkeypatch) -> tuple[list[str], threading.Event, threading.Event]:
    """Directory fsyncs recorded; the first one blocks, signalling ``running``, until ``release``."""
    synced: list[str] = []
    running, release = threading.Event(), threading.Event()

    def fsync(path):
        synced.append(path)
        if len(synced) == 1:
            running.set()
            assert release.wait(10)

    monkeypatch.setattr(storage, "_sync_dir", fsync)
    return synced, running, release


def test_a_rename_waits_for_a_directory_fsync_that_began_after_it(monkeypatch, tmp_path):
    """A caller that arrives while an fsync runs does not count it (its rename may have missed
    it): it waits for the next, which it shares with every caller that arrived meanwhile."""
    synced, running, release = _held_fsync(monkeypatch)
    directory = storage.DirectorySync(str(tmp_path))
    done: list[int] = []
    first = threading.Thread(target=lambda: (directory.sync(), done.append(0)))
    first.start()
    assert running.wait(10)
    later = [threading.Thread(target=lambda n=n: (directory.sync(), done.append(n))) for n in range(1, 5)]
    for thread in later:
        thread.start()
    time.sleep(0.2)
    assert done == [] and len(synced) == 1  # the four wait, although an fsync is running
    release.set()
    for thread in [first, *later]:
        thread.join(10)
    assert sorted(done) == [0, 1, 2, 3, 4]
    assert len(synced) == directory.rounds == 2  # the four shared the second


def test_a_failed_directory_fsync_fails_every_rename_that_waited_for_it(monkeypatch, tmp_path):
    calls = []

    def fsync(path):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(storage, "_sync_dir", fsync)
    directory = storage.DirectorySync(str(tmp_path))
    with pytest.raises(OSError):
        directory.sync()
    directory.sync()  # the next round is a new fsync, not the failed one's verdict
    assert len(calls) == 2


def test_blobs_committed_together_share_their_directory_and_its_fsync(monkeypatch, store):
    monkeypatch.setattr(storage, "SHARD_SECONDS", 1e9)  # one directory for the whole test
    real = storage._sync_dir
    monkeypatch.setattr(storage, "_sync_dir", lambda path: (time.sleep(0.05), real(path)))
    blobs: list[str] = []

    def put(n: int) -> None:
        with store.writer() as writer:
            writer.write(b"%d" % n)
            blobs.append(writer.commit())

    threads = [threading.Thread(target=put, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len({blob[:2] for blob in blobs}) == 1 and blob_files(store) == set(blobs)
    assert store.directory(blobs[0]).rounds < 16
    assert sorted(int(store.read(store.open(blob), 0, 8)) for blob in blobs) == list(range(16))

