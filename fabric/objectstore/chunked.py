"""The aws-chunked body decoder: streaming uploads with per-chunk signatures and trailers.

A body sent with ``x-amz-content-sha256: STREAMING-*`` arrives as::

    <hex size>[;chunk-signature=<sig>]\\r\\n<data>\\r\\n ... 0[;chunk-signature=<sig>]\\r\\n
    [<trailer name>:<value>\\r\\n [x-amz-trailer-signature:<sig>\\r\\n]] \\r\\n

:class:`AwsChunkedReader` hands out the decoded bytes as a file-like
``read(n)`` and verifies, before it reports the end of the body, every
chunk's signature (each chained to the one before, starting from the seed
signature of the request), the trailer's signature, and that the decoded
length is what ``x-amz-decoded-content-length`` announced. Data is handed
out before its chunk's signature is checked, so callers must treat nothing
as stored until ``read`` has returned ``b""``; the objectstore writes to a
temporary file and commits only then.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Protocol

from fabric.objectstore import sigv4
from fabric.objectstore.errors import S3Error

#: Longest chunk header or trailer line accepted.
MAX_LINE = 4096
#: Raw bytes read from the connection at once.
READ_SIZE = 1024 * 1024


class RawStream(Protocol):
    def read(self, size: int = -1) -> bytes: ...


class ChunkSigning:
    """What signed chunks are checked with: the signing key, the request's date, scope and seed signature."""

    def __init__(self, key: bytes, amz_date: str, scope: str, seed_signature: str) -> None:
        self.key = key
        self.amz_date = amz_date
        self.scope = scope
        self.previous = seed_signature

    def check_chunk(self, chunk_sha256: str, signature: str | None) -> None:
        expected = sigv4.sign(self.key, sigv4.chunk_string_to_sign(self.amz_date, self.scope, self.previous,
                                                                    chunk_sha256))
        if signature is None or not hmac.compare_digest(expected, signature):
            raise S3Error("SignatureDoesNotMatch", "a chunk's signature does not match its data",
                          ChunkSignatureProvided=signature or "")
        self.previous = expected

    def check_trailer(self, trailer: bytes, signature: str | None) -> None:
        expected = sigv4.sign(self.key, sigv4.trailer_string_to_sign(self.amz_date, self.scope, self.previous,
                                                                      trailer))
        if signature is None or not hmac.compare_digest(expected, signature):
            raise S3Error("SignatureDoesNotMatch", "the trailer's signature does not match the trailer")


class AwsChunkedReader:
    """Decoded bytes of an aws-chunked body read from ``raw`` (at most ``encoded_length`` bytes).

    ``signing`` checks chunk signatures (None for STREAMING-UNSIGNED-PAYLOAD-TRAILER);
    ``trailer`` names the trailing header expected (``x-amz-checksum-crc32``), whose
    value lands in :attr:`trailers`. Raises S3Error: IncompleteBody for a body that
    ends early or is longer or shorter than announced, InvalidRequest for a malformed
    chunk, SignatureDoesNotMatch for a chunk or trailer whose signature is wrong.
    """

    def __init__(self, raw: RawStream, *, encoded_length: int, decoded_length: int,
                 signing: ChunkSigning | None, trailer: str | None = None) -> None:
        self._raw = raw
        self._left = encoded_length
        self._buffer = bytearray()
        self._decoded_length = decoded_length
        self._signing = signing
        self._trailer = trailer.lower() if trailer else None
        self._chunk_left = 0
        self._chunk_signature: str | None = None
        self._chunk_hash = hashlib.sha256() if signing else None
        self._done = False
        self.decoded = 0
        self.trailers: dict[str, str] = {}

    # --- raw input ------------------------------------------------------------

    def _fill(self, want: int) -> bool:
        """Read until the buffer holds ``want`` bytes; False when the body ends first."""
        while len(self._buffer) < want:
            if self._left <= 0:
                return False
            data = self._raw.read(min(READ_SIZE, self._left))
            if not data:
                return False
            self._left -= len(data)
            self._buffer += data
        return True

    def _line(self) -> bytes:
        while True:
            end = self._buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[:end + 2]
                return line
            if len(self._buffer) > MAX_LINE:
                raise S3Error("InvalidRequest", f"an aws-chunked header line is longer than {MAX_LINE} bytes")
            if not self._fill(len(self._buffer) + 1):
                raise S3Error("IncompleteBody", "the aws-chunked body ended inside a chunk header")

    # --- decoding ---------------------------------------------------------------

    def _start_chunk(self) -> None:
        line = self._line()
        size_text, _, extension = line.partition(b";")
        try:
            size = int(size_text, 16)
        except ValueError:
            raise S3Error("InvalidRequest", f"aws-chunked chunk header {line[:80]!r} does not start with a hex "
                                            "size") from None
        if size < 0:
            raise S3Error("InvalidRequest", f"aws-chunked chunk size {size_text!r} is negative")
        signature = None
        if extension:
            name, _, value = extension.partition(b"=")
            if name.strip() != b"chunk-signature":
                raise S3Error("InvalidRequest", f"unknown aws-chunked extension {name[:40]!r}")
            signature = value.strip().decode("ascii", "replace")
        if self._signing is not None and signature is None:
            raise S3Error("SignatureDoesNotMatch", "a chunk of a signed streaming upload carries no signature")
        self._chunk_left = size
        self._chunk_signature = signature
        if size == 0:
            self._finish()

    def _end_chunk(self) -> None:
        if not self._fill(2):
            raise S3Error("IncompleteBody", "the aws-chunked body ended inside a chunk")
        if self._buffer[:2] != b"\r\n":
            raise S3Error("InvalidRequest", "an aws-chunked chunk is longer than its header says")
        del self._buffer[:2]
        self._check_chunk()

    def _check_chunk(self) -> None:
        if self._signing is not None:
            self._signing.check_chunk(self._chunk_hash.hexdigest(), self._chunk_signature)
            self._chunk_hash = hashlib.sha256()

    def _finish(self) -> None:
        """The final (empty) chunk: its signature, the trailer, the closing blank line, the length."""
        self._check_chunk()
        lines = []
        while True:
            line = self._line()
            if not line:
                break
            lines.append(line)
        signature = None
        trailer = b""
        for line in lines:
            name, sep, value = line.partition(b":")
            if not sep:
                raise S3Error("InvalidRequest", f"aws-chunked trailer line {line[:80]!r} is not name:value")
            name_text = name.strip().lower().decode("ascii", "replace")
            if name_text == "x-amz-trailer-signature":
                signature = value.strip().decode("ascii", "replace")
                continue
            self.trailers[name_text] = value.strip().decode("ascii", "replace")
            trailer += name.strip().lower() + b":" + value.strip() + b"\n"
        if self._trailer and self._trailer not in self.trailers:
            raise S3Error("IncompleteBody", f"the trailer {self._trailer} announced by x-amz-trailer never came")
        if self._signing is not None and self._trailer:
            self._signing.check_trailer(trailer, signature)
        if self.decoded != self._decoded_length:
            raise S3Error("IncompleteBody", f"the aws-chunked body decodes to {self.decoded} bytes; "
                                            f"x-amz-decoded-content-length says {self._decoded_length}")
        self._done = True

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` decoded bytes (all of them for -1); ``b""`` once the body ended and checked out."""
        if size < 0:
            parts = []
            while piece := self.read(READ_SIZE):
                parts.append(piece)
            return b"".join(parts)
        while not self._done:
            if self._chunk_left == 0:
                self._start_chunk()
                continue
            want = min(size, self._chunk_left)
            if self._buffer:
                data = bytes(self._buffer[:want])
                del self._buffer[:len(data)]
            else:
                data = self._raw.read(min(want, self._left)) if self._left > 0 else b""
                self._left -= len(data)
            if not data:
                raise S3Error("IncompleteBody", "the aws-chunked body ended inside a chunk")
            self._chunk_left -= len(data)
            self.decoded += len(data)
            if self.decoded > self._decoded_length:
                raise S3Error("IncompleteBody", f"the aws-chunked body is longer than x-amz-decoded-content-length "
                                                f"({self._decoded_length})")
            if self._chunk_hash is not None:
                self._chunk_hash.update(data)
            if self._chunk_left == 0:
                self._end_chunk()
            return data
        return b""
