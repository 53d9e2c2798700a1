"""Receiving bytes: a request body decoded, hashed and checked while it streams into a blob.

:func:`receive` reads the body (plain, or aws-chunked when
``x-amz-content-sha256`` says STREAMING-*) in 1 MiB pieces into a
:class:`~fabric.objectstore.storage.BlobWriter`, computing the MD5 (the ETag)
and the checksum the client asked for as it goes. Only after the last byte
does it compare what arrived with what was announced: the length, the
payload's SHA-256 that SigV4 signed, ``Content-MD5``, and the
``x-amz-checksum-*`` value from a header or the trailer. Any mismatch raises
before the blob is committed, so nothing of a bad upload is ever visible.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac

from fabric import metrics
from fabric.objectstore import checksums, documents, sigv4
from fabric.objectstore.chunked import AwsChunkedReader, ChunkSigning
from fabric.objectstore.errors import S3Error
from fabric.objectstore.request import S3Request
from fabric.objectstore.storage import BlobWriter

READ_SIZE = 1024 * 1024


class _Plain:
    """At most ``length`` bytes of the raw body, hashed with SHA-256 when the signature covers it."""

    def __init__(self, raw, length: int, expected_sha256: str | None) -> None:
        self._raw = raw
        self._left = length
        self._expected = expected_sha256
        self._sha256 = hashlib.sha256() if expected_sha256 else None
        self.trailers: dict[str, str] = {}

    def read(self, size: int) -> bytes:
        if self._left <= 0:
            if self._sha256 is not None and not hmac.compare_digest(self._sha256.hexdigest(), self._expected):
                raise S3Error("XAmzContentSHA256Mismatch", ClientComputedContentSHA256=self._expected,
                              S3ComputedContentSHA256=self._sha256.hexdigest())
            return b""
        data = self._raw.read(min(size, self._left))
        if not data:
            raise S3Error("IncompleteBody", f"the body ended {self._left} bytes short of Content-Length")
        self._left -= len(data)
        if self._sha256 is not None:
            self._sha256.update(data)
        return data


def body_reader(req: S3Request, max_size: int) -> tuple[_Plain | AwsChunkedReader, int]:
    """A reader of the request's decoded body and its announced length.

    MissingContentLength when the length is not announced, EntityTooLarge past ``max_size``.
    """
    raw = req.environ["wsgi.input"]
    payload = req.claim.payload_hash if req.claim is not None and not req.claim.presigned else \
        sigv4.UNSIGNED_PAYLOAD
    encoded = req.header_int("content-length")
    if payload in sigv4.STREAMING:
        decoded = req.header_int("x-amz-decoded-content-length")
        if decoded is None or encoded is None:
            raise S3Error("MissingContentLength", "a streaming upload needs Content-Length and "
                                                  "x-amz-decoded-content-length")
        _check_size(decoded, max_size)
        signing = None
        if payload != sigv4.STREAMING_UNSIGNED_TRAILER:
            signing = ChunkSigning(req.signing_key, req.claim.amz_date, req.claim.scope, req.claim.signature)
        trailer = req.headers.get("x-amz-trailer")
        return AwsChunkedReader(raw, encoded_length=encoded, decoded_length=decoded, signing=signing,
                                trailer=trailer), decoded
    if encoded is None:
        raise S3Error("MissingContentLength")
    _check_size(encoded, max_size)
    return _Plain(raw, encoded, None if payload == sigv4.UNSIGNED_PAYLOAD else payload), encoded


def _check_size(size: int, max_size: int) -> None:
    if size > max_size:
        raise S3Error("EntityTooLarge", f"the upload is {size} bytes; at most {max_size} are accepted",
                      ProposedSize=size, MaxSizeAllowed=max_size)


@dataclasses.dataclass(frozen=True)
class Received:
    """What arrived: its size, MD5 (hex) and, when one was asked for or sent, its checksum."""

    size: int
    md5: str
    checksum_algorithm: str | None
    checksum_value: str | None


def checksum_algorithm(req: S3Request, default: str | None = None) -> tuple[str | None, str | None]:
    """(algorithm, value announced in a header) of the checksum a request asks to be checked."""
    given = checksums.requested(req.headers)
    if given:
        return next(iter(given.items()))
    trailer = checksums.trailer_algorithm(req.headers)
    if trailer:
        return trailer, None
    sdk = req.headers.get("x-amz-sdk-checksum-algorithm")
    if sdk and sdk.upper() in checksums.ALGORITHMS:
        return sdk.upper(), None
    return default, None


def receive(req: S3Request, writer: BlobWriter | MemorySink, max_size: int, *, default_algorithm: str | None = None) -> Received:
    """Stream the request body into ``writer`` and check it; S3Error (BadDigest, InvalidDigest,
    XAmzContentSHA256Mismatch, IncompleteBody, SignatureDoesNotMatch, ...) when it does not hold.
    The caller discards the writer on error and commits it on success."""
    md5_header = req.headers.get("content-md5")
    expected_md5 = checksums.decode_md5(md5_header) if md5_header is not None else None
    algorithm, announced = checksum_algorithm(req, default_algorithm)
    reader, length = body_reader(req, max_size)
    md5 = hashlib.md5(usedforsecurity=False)
    hasher = checksums.new(algorithm) if algorithm else None
    try:
        while data := reader.read(READ_SIZE):
            writer.write(data)
            md5.update(data)
            if hasher is not None:
                hasher.update(data)
    finally:
        metrics.OBJECTSTORE_BYTES_RECEIVED.inc(writer.size)
    if writer.size != length:
        raise S3Error("IncompleteBody", f"received {writer.size} bytes; {length} were announced")
    if expected_md5 is not None and md5.digest() != expected_md5:
        raise S3Error("BadDigest", ExpectedDigest=base64.b64encode(expected_md5).decode(),
                      CalculatedDigest=base64.b64encode(md5.digest()).decode())
    value = None
    if hasher is not None:
        value = checksums.encode(hasher.digest())
        sent = announced or reader.trailers.get(checksums.header_name(algorithm))
        if sent is not None and sent != value:
            raise S3Error("BadDigest", f"The {algorithm} you specified did not match the calculated checksum.",
                          **{f"Checksum{algorithm}": sent, "Calculated": value})
    return Received(writer.size, md5.hexdigest(), algorithm if value else None, value)


class MemorySink:
    """A small body kept in memory (request documents), with a writer's ``write``/``size``."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> None:
        self.parts.append(bytes(data))
        self.size += len(data)


def read_document(req: S3Request) -> bytes:
    """A request document (at most documents.MAX_REQUEST_XML bytes), with the same checks as an upload."""
    sink = MemorySink()
    receive(req, sink, documents.MAX_REQUEST_XML)
    return b"".join(sink.parts)
