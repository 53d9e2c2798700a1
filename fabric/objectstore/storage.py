"""Object bytes in files: written whole or not at all, never changed in place.

Layout under the objectstore's directory::

    blobs/<xx>/<blob id>  the bytes of one object version or one multipart part (or of an
                          upload being written: no row names it yet)
    segments/<segment>    small objects' bytes, many to a file (fabric.objectstore.segments)
    tmp/                  what earlier versions wrote uploads to (emptied at start)
    bucket-changes        a stamp the serving processes share (fabric.objectstore.core.BucketChanges)

A blob is written under its own name in ``blobs/``, fsynced, and the directory
fsynced; only then does a database row name it, so a row always has its bytes,
and bytes no row names are never read. Blobs are immutable: an overwrite writes
a new blob, switches the row, then unlinks the old one, so a reader that opened
the old file reads it whole (POSIX keeps an open file's bytes). Bytes without a
row (an upload cut short by a crash, a crash between the fsyncs and the commit, or
between commit and unlink) are found by :meth:`BlobStore.recover` at start and removed.

Why not a temporary directory and a rename: on ext4 without a journal, an fsync of a
file new in a directory also writes that directory, and every upload's fsync wrote the
one ``tmp/``, then the rename dirtied ``blobs/<xx>`` again. Written in place, 16
threads committing blobs of 64 KiB used 182-277 µs of system CPU per blob against
321-458 µs (three of four interleaved pairs; the fourth 264 against 152).

Small objects are not files at all. A PUT of 1 byte to 1 MiB (held in memory until its
commit anyway) is appended to a segment this process shares among its uploads, and the
uploads that commit together are written and made durable by one ``fdatasync`` in the
segments' own writer thread (:mod:`fabric.objectstore.segments` states the promises: durable
before a row names it, never changed in place, blocks punched out only when no reader can
still be reading them, recovery at start). The issue asked for a temporary file and a
rename; even written in place, a file per PUT cost an inode (whose allocation on this ext4
without a journal scans the inodes freed in the last minutes), a directory entry, a directory
fsync and a native-thread trip per PUT. The server's CPU per PUT of 64 KiB in the bench (16
clients; each run's median of three rounds) was 0.64-1.10 ms packed (median 0.84 over six runs)
against 0.94-1.36 ms (median 1.13 over seven), runs interleaved under loads of 8-18; with one
serving process, 0.58-0.93 ms (five runs of six under 0.65) of which 0.11-0.26 system, against
0.91-1.48 ms of which 0.30-0.71 system.

Creating a file and fsync go through eventlet's native thread pool when the
process is green, so one upload waiting for the disk does not stall every other
request.

Uploads that commit at the same time share a directory fsync: a blob's id puts it in the
fan-out directory of the current second (:func:`new_blob_id`), and the files created in one
directory wait for one fsync of it that began after the last of them (:class:`DirectorySync`).
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import eventlet.patcher
import eventlet.tpool

from fabric import metrics
from fabric.objectstore import segments

LOG = logging.getLogger(__name__)

#: Bytes per read when streaming a blob out.
READ_SIZE = 1024 * 1024


def _off_hub(function, *args):
    """Run a call that waits for the disk in a native thread when the process is green."""
    if eventlet.patcher.is_monkey_patched("thread"):
        return eventlet.tpool.execute(function, *args)
    return function(*args)


def _sync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: Native locks even in a green process: a directory's fsync is shared by native threads (the
#: trips to eventlet's thread pool), which a green lock would not make wait.
_threading = eventlet.patcher.original("threading")


class _SyncRound:
    """One fsync of a directory: finished or not, and what it raised."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = False
        self.error: OSError | None = None


class DirectorySync:
    """Group fsync of one directory: ``sync()`` returns once an fsync of the directory that
    began after the call finished, so every file created (or linked) in it before the call is
    durable.

    Callers that arrive while an fsync runs wait for the next one, which one of them runs
    for all: N concurrent creations cost one or two fsyncs, not N. A failed fsync raises in every
    caller that waited for it (their files may not be durable). Call from native threads."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = _threading.Condition()
        self._next = _SyncRound()  # the round that begins after the one running, if any
        self._running = False
        self.rounds = 0  # fsyncs run, for tests and curiosity

    def sync(self) -> None:
        with self._lock:
            mine = self._next
            while not mine.done:
                if self._running:
                    self._lock.wait()
                    continue
                # No fsync running: the next round begins now, with this caller running it.
                self._running, self._next = True, _SyncRound()
                self._lock.release()
                try:
                    _sync_dir(self.path)
                except OSError as exc:
                    mine.error = exc
                finally:
                    self._lock.acquire()
                    self.rounds += 1
                    self._running, mine.done = False, True
                    self._lock.notify_all()
            if mine.error is not None:
                raise mine.error


def _durable(fd: int, directory: DirectorySync) -> None:
    """fsync and close ``fd``, then fsync its directory (``directory``): what makes a file
    created in it durable, in one trip to the native thread pool."""
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    directory.sync()


def _create(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _durable_file(path: str, pieces: list[bytes], directory: DirectorySync) -> None:
    """Create ``path``, write ``pieces`` to it, then as :func:`_durable`: a small blob's whole
    life on disk in one trip to the native thread pool."""
    fd = _create(path)
    try:
        for piece in pieces:
            _write_all(fd, piece)
    except BaseException:
        os.close(fd)
        raise
    _durable(fd, directory)


#: Seconds the blobs created meanwhile go to one fan-out directory (its first two hex digits),
#: so that concurrent uploads share its fsync (:class:`DirectorySync`). The 256 directories
#: take turns, each filled for a second every 256 seconds. Measured with 16 threads committing
#: 2,000 blobs of 64 KiB (this machine's ext4 has no journal, so a directory fsync writes the
#: directory's own block): 480 directory fsyncs instead of 2,000, blobs/s unchanged (2,066-2,703
#: against 2,169-2,482 with random directories, interleaved runs under a load of 4).
SHARD_SECONDS = 1.0


def new_blob_id() -> str:
    """A new blob's id: the current second's directory, then 120 random bits (one getrandom, no
    UUID object: this and the temporary file's own random suffix were two of the three random
    draws of every PUT, each a system call that lets the native threads take the GIL)."""
    return f"{int(time.time() / SHARD_SECONDS) % 256:02x}{os.urandom(15).hex()}"


#: Bytes a writer keeps in memory before it creates its file. A blob no bigger is
#: created, written and fsynced in one trip to the native thread pool at commit; a
#: bigger one streams to its file from then on, so an upload of any size keeps the process small.
#: Creating a file waits for the filesystem's journal, which the other uploads' fsyncs keep
#: busy: on the hub, that wait stalled every request of the process (a third of the main
#: thread's time under the bench's 16 concurrent PUTs of 64 KiB, py-spy).
BUFFER_MAX = 1024 * 1024


class BlobWriter:
    """One blob being written: ``write`` bytes, then ``commit`` (durable, named) or ``discard``.

    Nothing is on disk before the bytes pass BUFFER_MAX or ``commit``; from then on they are in
    the blob's file, which no row names before ``commit`` returned (and the caller wrote one).
    A ``packed`` writer's blob of 1 byte to BUFFER_MAX is appended to a shared segment at
    commit instead (:mod:`fabric.objectstore.segments`); its id is known only then."""

    def __init__(self, store: BlobStore, packed: bool = False) -> None:
        self._store = store
        self._packed = packed
        # A packed blob's id comes from its segment: a random one drawn now would be wasted (one
        # getrandom per PUT) unless the blob goes to a file after all (_name_file).
        self.blob_id = "" if packed else new_blob_id()
        self._path = store.path(self.blob_id) if self.blob_id else ""
        self._fd: int | None = None
        self._buffer: list[bytes] | None = []
        self._buffered = 0
        self._on_disk = False  # the file may exist (created, or its creation attempted)
        self._committed = False
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        if self._buffer is not None and self._buffered + len(data) <= BUFFER_MAX:
            self._buffer.append(bytes(data))
            self._buffered += len(data)
        else:
            _write_all(self.fileno(), data)
        self.size += len(data)

    def fileno(self) -> int:
        """The blob file's descriptor, created now if it was not yet, with what was buffered
        written to it (for kernel-side copies; add what they wrote to ``size``)."""
        if self._fd is None:
            if self._buffer is None:
                raise ValueError("the blob was committed or discarded")
            self._name_file()
            self._on_disk = True
            self._fd = _off_hub(_create, self._path)
            pieces, self._buffer = self._buffer, None
            for piece in pieces:
                _write_all(self._fd, piece)
        return self._fd

    def commit(self) -> str:
        """Make the bytes durable under their blob id; returns the id."""
        if self._fd is None:
            if self._buffer is None:
                raise ValueError("the blob was committed or discarded")
            pieces, self._buffer = self._buffer, None
            if self._packed and 0 < self._buffered <= segments.PACK_MAX:
                # Nothing to discard if this raises: the round's bytes are named by no row.
                self.blob_id = self._store.segments.append(pieces, self._buffered)
                self._committed = True
                return self.blob_id
            self._name_file()
            self._on_disk = True
            _off_hub(_durable_file, self._path, pieces, self._store.directory(self.blob_id))
        else:
            fd, self._fd = self._fd, None
            _off_hub(_durable, fd, self._store.directory(self.blob_id))
        self._committed = True
        return self.blob_id

    def _name_file(self) -> None:
        if not self.blob_id:
            self.blob_id = new_blob_id()
            self._path = self._store.path(self.blob_id)

    def discard(self) -> None:
        """Forget the bytes written, unless committed (idempotent; no row ever named them)."""
        self._buffer = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._on_disk and not self._committed:
            self._on_disk = False
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._committed:
            self.discard()


class BlobStore:
    """The directory of blobs (created, with its 256 fan-out directories, if missing)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"
        self.blob_dir = self.root / "blobs"
        # Plain strings for the per-request paths: pathlib's joins cost more than the syscalls.
        self._blob_prefix = f"{self.blob_dir}{os.sep}"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.segment_dir = self.root / "segments"
        self.segment_dir.mkdir(exist_ok=True)
        self.segments = segments.SegmentLog(str(self.segment_dir), DirectorySync(str(self.segment_dir)).sync,
                                            _off_hub)
        self._directories: dict[str, DirectorySync] = {}
        for index in range(256):
            (self.blob_dir / f"{index:02x}").mkdir(parents=True, exist_ok=True)
            self._directories[f"{index:02x}"] = DirectorySync(f"{self._blob_prefix}{index:02x}")

    def path(self, blob_id: str) -> str:
        return f"{self._blob_prefix}{blob_id[:2]}{os.sep}{blob_id}"

    def directory(self, blob_id: str) -> DirectorySync:
        """The group fsync of the directory a blob is in."""
        return self._directories[blob_id[:2]]

    def writer(self, packed: bool = False) -> BlobWriter:
        """A new blob's writer; ``packed``: a small blob goes into a shared segment (for objects of
        a PUT, whose readers pass ``named_at``)."""
        return BlobWriter(self, packed)

    def open(self, blob_id: str, named_at: float | None = None):
        """The blob opened for reading; FileNotFoundError when it is gone (read the row again).

        ``named_at``: ``time.monotonic()`` taken before reading the row that named the blob. A
        packed blob is read whole now, and refused if that was too late to be sure of its bytes
        (:meth:`segments.SegmentLog.read`); None only for a blob the caller's own row names."""
        if segments.is_packed(blob_id):
            return self.segments.read(blob_id, named_at)
        return open(self.path(blob_id), "rb", buffering=0)

    def size(self, handle) -> int:
        """Bytes in an open blob."""
        if isinstance(handle, io.BytesIO):
            return handle.getbuffer().nbytes
        return os.fstat(handle.fileno()).st_size

    def link(self, blob_id: str, named_at: float | None = None) -> str:
        """A new blob with the same bytes (a hard link: blobs never change; a packed blob's bytes
        copied to a file blob, whose row may outlive the segment's); FileNotFoundError if gone."""
        if segments.is_packed(blob_id):
            with self.open(blob_id, named_at) as source, self.writer() as writer:
                writer.write(source.getbuffer())
                return writer.commit()
        new_id = new_blob_id()
        target = self.path(new_id)
        os.link(self.path(blob_id), target)
        _off_hub(self.directory(new_id).sync)
        return new_id

    def remove(self, blob_ids: Iterable[str | None]) -> None:
        """Unlink blobs no row names any more (missing ones are fine); packed ones are
        reclaimed later (:meth:`segments.SegmentLog.release`)."""
        packed = []
        for blob_id in blob_ids:
            if not blob_id:
                continue
            if segments.is_packed(blob_id):
                packed.append(blob_id)
                continue
            try:
                os.unlink(self.path(blob_id))
            except FileNotFoundError:
                pass
        if packed:
            self.segments.release(packed)

    def read(self, handle, start: int, length: int) -> bytes:
        """``length`` bytes of an open blob from ``start``, whole (fewer if it ends first); closes
        the handle. For answers small enough to send with their headers in one write."""
        if isinstance(handle, io.BytesIO):  # a packed blob, read whole already
            with handle:
                data = handle.getvalue() if start == 0 and length >= handle.getbuffer().nbytes else \
                    handle.getbuffer()[start:start + length].tobytes()
            metrics.OBJECTSTORE_BYTES_SENT.inc(len(data))
            return data
        return b"".join(self.stream(handle, start, length))

    def stream(self, handle, start: int, length: int) -> Iterator[bytes]:
        """``length`` bytes of an open blob from ``start``, in pieces; closes the handle at the end."""
        if isinstance(handle, io.BytesIO):
            yield self.read(handle, start, length)
            return
        try:
            offset, left = start, length
            while left > 0:
                data = os.pread(handle.fileno(), min(READ_SIZE, left), offset)
                if not data:
                    break
                offset += len(data)
                left -= len(data)
                yield data
        finally:
            handle.close()
            metrics.OBJECTSTORE_BYTES_SENT.inc(offset - start)

    def recover(self, referenced: Callable[[], set[str]]) -> tuple[int, int]:
        """Remove what a crash left: every temporary file, and every blob no row names.

        ``referenced()`` returns the blob ids rows name. Call it before serving
        (nothing may write meanwhile). Returns (temporary files, orphan blobs) removed; the
        second counts ranges of segments punched and segments unlinked too.
        """
        temporary = 0
        for entry in os.scandir(self.tmp_dir):
            os.unlink(entry.path)
            temporary += 1
        known = referenced()
        orphans = 0
        for index in range(256):
            for entry in os.scandir(self.blob_dir / f"{index:02x}"):
                if entry.name not in known:
                    os.unlink(entry.path)
                    orphans += 1
        orphans += self.segments.recover(known)
        if temporary or orphans:
            LOG.warning("Removed %d unfinished upload file(s) and %d blob(s) no object or part names "
                        "(left by a crash)", temporary, orphans)
        return temporary, orphans
