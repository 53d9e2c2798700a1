"""Small blobs packed into shared append-only segment files (what :class:`~fabric.objectstore.storage.BlobStore`
uses for objects of at most :data:`PACK_MAX` bytes).

A packed blob's id names where its bytes are: ``s<segment>.<offset>.<length>`` (hexadecimal), so a
row holds it in the same column as a file blob's id (file blobs' ids are hexadecimal: they never
begin with ``s``).

Promises:

- **Durable before named.** :meth:`SegmentLog.append` returns a blob's id only once its bytes
  are written and an ``fdatasync`` of the segment that began after the write has finished (a
  new segment's directory entry too). Appends that arrive while a round is being written wait
  for the next round, which the log's writer thread writes and syncs for them all: N
  concurrent PUTs cost a few ``fdatasync`` calls and a few wake-ups of the hub, not N.
- **Never changed in place.** A record's bytes are written once, at an offset no other record
  ever gets (offsets are reserved in-process; each process appends only to segments it created).
  Records start on a :data:`BLOCK` boundary, so no two share a filesystem block: punching one
  frees exactly its blocks, and writing one never waits for another's block under writeback.
- **Reclaimed only when no reader can be reading.** :meth:`SegmentLog.release` queues the
  record; :data:`GRACE_SECONDS` later its blocks are punched out
  (``fallocate(PUNCH_HOLE)``) and a sealed segment left with no data is unlinked. A reader
  reads a packed blob whole in one ``pread`` and refuses (FileNotFoundError, "read the row
  again") bytes it finished reading :data:`GRACE_SECONDS` or more after it began reading the
  row that named them. Why this is enough: the row stopped naming the record at a commit that
  came before the release (time R), so a reader that found the record began before R; it
  finished its ``pread`` less than GRACE after it began, so before R + GRACE, when the punch
  may first run. ``time.monotonic`` is CLOCK_MONOTONIC, one clock for every process.
- **Recovery.** :meth:`SegmentLog.recover` (before anything writes) punches every range of every
  segment that no row names (an append cut short by a crash, a crash between the sync and the
  commit or between the release and the punch), unlinks segments left with nothing named, and
  marks every segment sealed (nothing appends to a segment of an earlier process).
"""

from __future__ import annotations

import ctypes
import errno
import io
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable

import eventlet
import eventlet.event
import eventlet.hubs
import eventlet.patcher

LOG = logging.getLogger(__name__)

#: Largest blob packed into a segment. It is BlobWriter's in-memory buffer (BUFFER_MAX): a blob
#: no bigger is whole in memory at commit, so it is appended in one write; a bigger one has
#: streamed to its own file already. At this size a file of its own costs an inode, a directory
#: entry and a directory fsync, which for 64 KiB was as much system CPU as writing the bytes.
PACK_MAX = 1024 * 1024
#: Records begin on this boundary (the filesystem block): see the module's docstring.
BLOCK = 4096
#: A segment past this size takes no more records (the process starts a new one). Sealed segments
#: are unlinked once every record in them was released; a bigger segment waits longer for its last.
SEGMENT_MAX = 256 * 1024 * 1024
#: Seconds the writer thread waits for records before it ends.
WRITER_IDLE_SECONDS = 5.0
#: Seconds between a record's release and its punch, and the longest a reader may take from
#: reading a row to the end of reading the bytes it names (see the module's docstring).
GRACE_SECONDS = 30.0

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
_threading = eventlet.patcher.original("threading")


def is_packed(blob_id: str) -> bool:
    return blob_id[:1] == "s"


def parse(blob_id: str) -> tuple[str, int, int]:
    """(segment, offset, length) of a packed blob's id."""
    segment, offset, length = blob_id[1:].split(".")
    return segment, int(offset, 16), int(length, 16)


def punch(fd: int, offset: int, length: int) -> None:
    """Give the blocks of ``length`` bytes from ``offset`` back to the filesystem (they read as zeros)."""
    if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))


def _holds_data(fd: int) -> bool:
    """Whether any byte of the file is data, not a hole (its blocks may still hold an extent tree)."""
    try:
        os.lseek(fd, 0, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return False
        raise
    return True


def _span(length: int) -> int:
    """Bytes a record of ``length`` occupies (to the next block boundary)."""
    return -(-length // BLOCK) * BLOCK


class _Segment:
    """A segment this process appends to; created on disk by the first round that writes it."""

    __slots__ = ("name", "path", "fd", "end")

    def __init__(self, directory: str) -> None:
        self.name = secrets.token_hex(6)
        self.path = f"{directory}{os.sep}{self.name}"
        self.fd: int | None = None
        self.end = 0  # the next record's offset


class _Round:
    """Records written and synced together: (segment, offset, pieces, seals the segment), and
    what their appenders wait on."""

    __slots__ = ("items", "finished", "error")

    def __init__(self, green: bool) -> None:
        self.items: list[tuple[_Segment, int, list[bytes], bool]] = []
        self.finished = eventlet.event.Event() if green else _threading.Event()
        self.error: OSError | None = None


def _write_round(items: list[tuple[_Segment, int, list[bytes], bool]], sync_directory: Callable[[], None]) -> None:
    """Write a round's records and make them durable (in the writer thread)."""
    created = False
    touched: dict[int, _Segment] = {}
    for segment, offset, pieces, _ in items:
        if segment.fd is None:
            segment.fd = os.open(segment.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            created = True
        written = os.pwritev(segment.fd, pieces, offset)
        if written != sum(len(piece) for piece in pieces):  # a short write: write the rest one by one
            data = b"".join(pieces)
            while written < len(data):
                written += os.pwrite(segment.fd, data[written:], offset + written)
        touched[id(segment)] = segment
    for segment in touched.values():
        os.fdatasync(segment.fd)
    if created:
        sync_directory()
    for segment, _, _, seals in items:
        if seals:  # the segment's last record: nothing writes to it again
            os.close(segment.fd)
            segment.fd = -1


class SegmentLog:
    """The segments under ``directory``: append (group commit), read whole, release, recover.

    ``sync_directory`` makes the directory's entries durable; ``off_hub`` runs a call that waits
    for the disk without stalling the process's other green threads.

    Rounds are written by one native thread of the log's own, back to back: the next round
    begins as soon as the last one's sync returned, with every record appended meanwhile. In a
    green process its appenders are woken through a pipe the hub watches, one wake-up per round.
    A round written by whichever appender came first, through eventlet's thread pool, left the
    disk idle from the end of one round until the hub had run that appender again and it had
    handed the next round to the pool. 16 green threads appending 64 KiB records, interleaved
    runs under a load of 13-14: 2,484-3,019 appends/s and 67-82 µs of CPU each with the
    writer thread, 1,841-2,517/s and 90-101 µs with the pool."""

    def __init__(self, directory: str, sync_directory: Callable[[], None],
                 off_hub: Callable[..., object]) -> None:
        self.directory = directory
        self._sync_directory = sync_directory
        self._off_hub = off_hub
        self._green = eventlet.patcher.is_monkey_patched("thread")
        # A native lock, held only to reserve, queue or take records (never across a system call
        # that waits), so a green appender holding it never waits long for the writer thread.
        self._lock = _threading.Condition()
        self._current: _Segment | None = None
        self._next = _Round(self._green)
        self._writer: object | None = None  # the writer thread, while it runs
        self._finished: list[_Round] = []  # rounds whose green appenders the hub has not woken yet
        self._wake_fd = -1  # the pipe's write end (green processes)
        self._release_lock = _threading.Lock()  # the timer runs in its own thread when not green
        self._released: list[tuple[float, str, int, int]] = []  # (due, segment, offset, length)
        self._reclaim_scheduled = False
        self.rounds = 0  # rounds written, for tests and curiosity

    def path(self, segment: str) -> str:
        return f"{self.directory}{os.sep}{segment}"

    def append(self, pieces: list[bytes], length: int) -> str:
        """Write ``pieces`` (``length`` bytes in all, 1 to PACK_MAX) as one record; returns its
        blob id once durable. OSError when the round failed (nothing of it is named)."""
        with self._lock:
            segment = self._current
            if segment is None or segment.end >= SEGMENT_MAX:
                segment = self._current = _Segment(self.directory)
            offset = segment.end
            segment.end += _span(length)
            mine = self._next
            mine.items.append((segment, offset, pieces, segment.end >= SEGMENT_MAX))
            if self._writer is None:
                self._start_writer()
            self._lock.notify()
        mine.finished.wait()
        if mine.error is not None:
            raise mine.error
        return f"s{segment.name}.{offset:x}.{length:x}"

    def _start_writer(self) -> None:
        """Start the writer thread (and in a green process the hub's side of the pipe); called
        holding the lock."""
        if self._green and self._wake_fd < 0:
            read_fd, self._wake_fd = os.pipe()
            os.set_blocking(read_fd, False)
            eventlet.spawn(self._wake_appenders, read_fd)
        self._writer = _threading.Thread(target=self._write_rounds, name="segment-writer", daemon=True)
        self._writer.start()

    def _write_rounds(self) -> None:
        """The writer thread: write each round as soon as the last one is durable; ends after
        WRITER_IDLE_SECONDS without records (the next append starts another)."""
        while True:
            with self._lock:
                if not self._next.items:
                    self._lock.wait(WRITER_IDLE_SECONDS)
                    if not self._next.items:
                        self._writer = None
                        return
                mine, self._next = self._next, _Round(self._green)
            try:
                _write_round(mine.items, self._sync_directory)
            except OSError as exc:
                mine.error = exc
                with self._lock:
                    self._abandon(mine)
            except BaseException as exc:  # a bug: the appenders fail rather than wait forever
                mine.error = OSError(f"writing packed blobs failed: {exc!r}")
                LOG.exception("Writing a round of packed blobs failed")
            self.rounds += 1
            if self._green:
                with self._lock:
                    self._finished.append(mine)
                os.write(self._wake_fd, b"x")
            else:
                mine.finished.set()

    def _wake_appenders(self, read_fd: int) -> None:
        """On the hub: wake the green appenders of every round the writer thread finished."""
        while True:
            eventlet.hubs.trampoline(read_fd, read=True)
            try:
                os.read(read_fd, 4096)
            except BlockingIOError:
                continue
            with self._lock:
                finished, self._finished = self._finished, []
            for done in finished:
                done.finished.send()

    def _abandon(self, failed: _Round) -> None:
        """After a failed round: its segments take no more records (what the failed sync left of
        their pages is unknown); recovery punches what no row names. Called holding the lock
        (in the writer thread, the only one that writes or closes segments' descriptors)."""
        for segment, _, _, _ in failed.items:
            if segment is self._current:
                self._current = None
            if segment.fd is not None and segment.fd >= 0:
                os.close(segment.fd)
                segment.fd = -1  # closed: a later round of this segment (reserved before) fails too

    def read(self, blob_id: str, named_at: float | None = None) -> io.BytesIO:
        """A packed blob's bytes, read whole. ``named_at`` is ``time.monotonic()`` taken before the
        row naming the blob was read; FileNotFoundError (read the row again) when the segment is
        gone or the bytes were read GRACE_SECONDS or more after it."""
        segment, offset, length = parse(blob_id)
        fd = os.open(self.path(segment), os.O_RDONLY)
        try:
            data = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        if named_at is not None and time.monotonic() - named_at >= GRACE_SECONDS:
            raise FileNotFoundError(f"blob {blob_id} was read too long after its row; read the row again")
        return io.BytesIO(data)

    def release(self, blob_ids: Iterable[str]) -> None:
        """Queue records no row names any more for reclaiming, GRACE_SECONDS from now."""
        due = time.monotonic() + GRACE_SECONDS
        with self._release_lock:
            self._released.extend((due, *parse(blob_id)) for blob_id in blob_ids)
            if not self._released or self._reclaim_scheduled:
                return
            self._reclaim_scheduled = True
        self._later(GRACE_SECONDS, self._reclaim_due)

    def _later(self, seconds: float, function: Callable[[], None]) -> None:
        if self._green:
            eventlet.spawn_after(seconds, function)
        else:
            timer = _threading.Timer(seconds, function)
            timer.daemon = True
            timer.start()

    def _reclaim_due(self) -> None:
        now = time.monotonic()
        with self._release_lock:
            due = [entry for entry in self._released if entry[0] <= now]
            self._released = [entry for entry in self._released if entry[0] > now]
        try:
            if due:
                self._off_hub(self._punch_all, [entry[1:] for entry in due])
        except Exception:
            LOG.exception("Reclaiming %d released blob(s) failed; the next start reclaims them", len(due))
        finally:
            with self._release_lock:
                self._reclaim_scheduled = bool(self._released)
                wait = self._released[0][0] - time.monotonic() if self._released else 0.0
            if self._reclaim_scheduled:
                self._later(max(0.0, wait), self._reclaim_due)

    def _punch_all(self, records: list[tuple[str, int, int]]) -> None:
        by_segment: dict[str, list[tuple[int, int]]] = {}
        for segment, offset, length in records:
            by_segment.setdefault(segment, []).append((offset, length))
        for segment, ranges in by_segment.items():
            path = self.path(segment)
            try:
                fd = os.open(path, os.O_WRONLY)
            except FileNotFoundError:
                continue
            try:
                for offset, length in ranges:
                    punch(fd, offset, _span(length))
                if os.fstat(fd).st_size >= SEGMENT_MAX and not _holds_data(fd):
                    os.unlink(path)  # sealed and every record punched: no row names anything in it
            finally:
                os.close(fd)

    def recover(self, referenced: set[str]) -> int:
        """Punch every range of every segment that no blob id in ``referenced`` names, unlink
        segments naming nothing, seal the rest; call before anything appends. Returns the
        ranges punched and segments unlinked."""
        named: dict[str, list[tuple[int, int]]] = {}
        for blob_id in referenced:
            if is_packed(blob_id):
                segment, offset, length = parse(blob_id)
                named.setdefault(segment, []).append((offset, offset + _span(length)))
        removed = 0
        for entry in os.scandir(self.directory):
            ranges = sorted(named.get(entry.name, ()))
            if not ranges:
                os.unlink(entry.path)
                removed += 1
                continue
            fd = os.open(entry.path, os.O_RDWR)
            try:
                removed += self._punch_unnamed(fd, ranges)
                if os.fstat(fd).st_size < SEGMENT_MAX:
                    os.ftruncate(fd, SEGMENT_MAX)  # sealed: sparse, no block allocated
            finally:
                os.close(fd)
        return removed

    @staticmethod
    def _punch_unnamed(fd: int, ranges: list[tuple[int, int]]) -> int:
        """Punch the data of ``fd`` outside the sorted (start, end) ``ranges``; returns how many pieces."""
        punched = 0
        gaps, position = [], 0
        for start, end in ranges:
            if start > position:
                gaps.append((position, start))
            position = max(position, end)
        size = os.fstat(fd).st_size
        gaps.append((position, _span(size)))  # to the block's end: a partial block stays otherwise
        for start, end in gaps:
            offset = start
            while offset < end:
                try:
                    data = os.lseek(fd, offset, os.SEEK_DATA)
                except OSError:  # ENXIO: no data past offset
                    break
                if data >= end:
                    break
                hole = os.lseek(fd, data, os.SEEK_HOLE)
                hole = min(_span(size) if hole >= size else hole, end)
                punch(fd, data, hole - data)
                punched += 1
                offset = hole
        return punched
