"""A small S3 client of the objectstore for fabric's own services (the Image API, compute hosts).

Requests are signed with AWS Signature Version 4 in the ``Authorization``
header by :mod:`fabric.objectstore.sigv4`, the same functions the objectstore
verifies with: one home for the signing rule, and no SDK at run time (boto3 is a
test dependency only). Bodies stream both ways: an upload reads its source in
pieces and a download hands back the open response, so no object is ever held in
memory (a multipart part, at most :data:`PART_SIZE`, is the largest buffer).

Streamed bodies are sent as ``UNSIGNED-PAYLOAD`` (their SHA-256 is not known
before the last byte); their integrity is checked instead by the MD5 ETag the
objectstore answers, which the caller compares with what it sent.
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import re
from collections.abc import Callable
from urllib.parse import urlsplit
from xml.etree import ElementTree

from fabric.exception import Invalid, ObjectstoreError
from fabric.objectstore import sigv4

#: Size of each part of a multipart upload (S3's smallest is 5 MiB; 10,000 parts make 80 GiB).
PART_SIZE = 8 * 1024 * 1024
#: Most parts S3 allows in one upload.
MAX_PARTS = 10000
READ_SIZE = 1024 * 1024
#: Longest error document read from an answer (S3's are a few hundred bytes).
MAX_ERROR_BODY = 64 * 1024
_ETAG = re.compile(r'"?([0-9a-f]{32}(?:-\d+)?)"?')

Reader = Callable[[int], bytes]


def _amz_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")


def _error_fields(body: bytes) -> tuple[str, str]:
    """(Code, Message) of an S3 error document; ("", first bytes) when it is none."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return "", body[:200].decode("utf-8", "replace")
    return root.findtext("Code") or "", root.findtext("Message") or ""


def _etag(response: http.client.HTTPResponse) -> str:
    match = _ETAG.fullmatch(response.getheader("ETag") or "")
    return match.group(1) if match else ""


class S3Client:
    """Signed requests to one objectstore endpoint with one access key.

    Every method raises ObjectstoreError naming the request, the HTTP status and
    S3's error code when the objectstore refuses it or cannot be reached.
    """

    def __init__(self, endpoint: str, access_key: str, secret: str, region: str, timeout: float = 300.0) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme != "http" or not parts.hostname:
            raise Invalid(reason=f"objectstore URL {endpoint!r}: accepted http://host[:port]")
        self.endpoint = endpoint.rstrip("/")
        self.netloc = parts.netloc
        self.access_key, self.secret, self.region, self.timeout = access_key, secret, region, timeout

    # --- one request -------------------------------------------------------------------

    def _signed_headers(self, method: str, path: str, query: str, headers: dict[str, str],
                        payload_hash: str) -> dict[str, str]:
        amz_date = _amz_now()
        signed = {k.lower(): v for k, v in headers.items()} | {
            "host": self.netloc, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash}
        names = sorted(signed)
        canonical = sigv4.canonical_request(method, path, query, signed, names, payload_hash)
        scope = f"{amz_date[:8]}/{self.region}/s3/aws4_request"
        key = sigv4.signing_key(self.secret, amz_date[:8], self.region, "s3")
        signature = sigv4.sign(key, sigv4.string_to_sign(amz_date, scope, canonical))
        signed["authorization"] = (f"{sigv4.ALGORITHM} Credential={self.access_key}/{scope}, "
                                   f"SignedHeaders={';'.join(names)}, Signature={signature}")
        return signed

    def request(self, method: str, bucket: str, key: str | None = None, query: str = "", *,
                body: bytes | bytearray | None = None, stream: tuple[Reader, int] | None = None,
                headers: dict[str, str] | None = None, ok: tuple[int, ...] = (200,)) -> http.client.HTTPResponse:
        """Send one signed request; the response (unread) when its status is in ``ok``.

        ``body`` is sent whole (its SHA-256 signed); ``stream`` = (read, length) sends
        exactly ``length`` bytes read in pieces, unsigned. Raises ObjectstoreError for any
        other status or a connection failure, Invalid when ``stream`` ends early (the
        connection is then dropped, so the objectstore keeps nothing of it).
        """
        path = "/" + sigv4.uri_encode(bucket) + (("/" + sigv4.uri_encode(key, keep_slash=True)) if key else "")
        what = f"{method} {path}"
        length = len(body) if body is not None else (stream[1] if stream is not None else 0)
        payload = hashlib.sha256(body or b"").hexdigest() if stream is None else sigv4.UNSIGNED_PAYLOAD
        send = self._signed_headers(method, path, query, dict(headers or {}), payload)
        connection = http.client.HTTPConnection(self.netloc, timeout=self.timeout)
        try:
            connection.putrequest(method, path + (f"?{query}" if query else ""), skip_host=True,
                                  skip_accept_encoding=True)
            for name, value in send.items():
                connection.putheader(name, value)
            if method in ("PUT", "POST") or length:
                connection.putheader("content-length", str(length))
            connection.endheaders(body)
            if stream is not None:
                self._send_stream(connection, stream, what)
            response = connection.getresponse()
        except OSError as exc:
            connection.close()
            raise ObjectstoreError(url=self.endpoint, request=what, status="-", code="", reason=str(exc)) from None
        except BaseException:
            connection.close()
            raise
        if response.status not in ok:
            code, message = _error_fields(response.read(MAX_ERROR_BODY))
            connection.close()
            raise ObjectstoreError(url=self.endpoint, request=what, status=response.status, code=code,
                                   reason=message)
        return response

    @staticmethod
    def _send_stream(connection: http.client.HTTPConnection, stream: tuple[Reader, int], what: str) -> None:
        read, length = stream
        left = length
        while left > 0:
            data = read(min(READ_SIZE, left))
            if not data:
                raise Invalid(reason=f"{what}: the data ended after {length - left} of {length} bytes")
            if len(data) > left:
                raise Invalid(reason=f"{what}: the data is longer than the {length} bytes announced")
            connection.send(data)
            left -= len(data)

    def _done(self, method: str, bucket: str, key: str | None = None, query: str = "", **kwargs) -> \
            http.client.HTTPResponse:
        response = self.request(method, bucket, key, query, **kwargs)
        response.read()
        response.close()
        return response

    # --- operations ----------------------------------------------------------------------

    def ensure_bucket(self, bucket: str) -> None:
        """Create ``bucket`` (private) unless this key's project has it already."""
        try:
            self._done("PUT", bucket)
        except ObjectstoreError as exc:
            if exc.fields.get("code") != "BucketAlreadyOwnedByYou":
                raise

    def put_object(self, bucket: str, key: str, read: Reader, length: int) -> str:
        """Store exactly ``length`` bytes read from ``read`` as one object; its ETag (hex MD5)."""
        return _etag(self._done("PUT", bucket, key, stream=(read, length)))

    def upload(self, bucket: str, key: str, read: Reader, length: int | None, max_single: int) -> str:
        """Store what ``read`` gives as ``key``: one PUT when ``length`` is known and at most
        ``max_single`` (or the data fits in one part), a multipart upload of
        :data:`PART_SIZE` parts otherwise; the ETag S3 gives it. Nothing is left behind on error.
        """
        if length is not None and length <= max_single:
            return self.put_object(bucket, key, read, length)
        first = _read_part(read)
        if len(first) < PART_SIZE:
            return _etag(self._done("PUT", bucket, key, body=first))
        return self._multipart(bucket, key, first, read)

    def _multipart(self, bucket: str, key: str, first: bytearray, read: Reader) -> str:
        response = self.request("POST", bucket, key, "uploads=", body=b"")
        upload_id = ElementTree.fromstring(response.read(MAX_ERROR_BODY)).findtext(
            "{http://s3.amazonaws.com/doc/2006-03-01/}UploadId") or ""
        response.close()
        query = f"uploadId={sigv4.uri_encode(upload_id)}"
        try:
            digests, part = [], first
            while part:
                number = len(digests) + 1
                if number > MAX_PARTS:
                    raise Invalid(reason=f"PUT /{bucket}/{key}: more than {MAX_PARTS} parts of {PART_SIZE} bytes")
                digest = hashlib.md5(part, usedforsecurity=False)
                etag = _etag(self._done("PUT", bucket, key, f"partNumber={number}&{query}", body=part))
                if etag != digest.hexdigest():
                    raise ObjectstoreError(url=self.endpoint, request=f"PUT /{bucket}/{key} part {number}",
                                           status=200, code="BadDigest",
                                           reason=f"ETag {etag} is not the MD5 {digest.hexdigest()} sent")
                digests.append(digest.digest())
                part = _read_part(read)
            listed = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>\"{d.hex()}\"</ETag></Part>"
                             for n, d in enumerate(digests, 1))
            body = f"<CompleteMultipartUpload>{listed}</CompleteMultipartUpload>".encode()
            response = self.request("POST", bucket, key, query, body=body)
            answer = response.read(MAX_ERROR_BODY)
            response.close()
        except BaseException:
            try:
                self._done("DELETE", bucket, key, query, ok=(204, 404))
            except ObjectstoreError:
                pass  # the objectstore forgets abandoned uploads' parts on its own clean-up
            raise
        code, message = _error_fields(answer)
        if code:  # S3 may answer 200 and still fail a completion
            raise ObjectstoreError(url=self.endpoint, request=f"POST /{bucket}/{key}", status=200, code=code,
                                   reason=message)
        return multipart_etag(digests)

    def get_object(self, bucket: str, key: str) -> http.client.HTTPResponse:
        """The open response of a GET of ``key`` (read it, then close it); its length is
        ``response.length``. ObjectstoreError (code NoSuchKey for a missing object)."""
        return self.request("GET", bucket, key)

    def delete_object(self, bucket: str, key: str) -> None:
        """Delete ``key`` (no error when it is already gone)."""
        self._done("DELETE", bucket, key, ok=(204, 200))


def _read_part(read: Reader) -> bytearray:
    """Up to PART_SIZE bytes from ``read`` (fewer only at the end of the data)."""
    part = bytearray()
    while len(part) < PART_SIZE:
        data = read(min(READ_SIZE, PART_SIZE - len(part)))
        if not data:
            break
        part += data
    return part


def multipart_etag(part_md5s: list[bytes]) -> str:
    """The ETag S3 gives a multipart object: the MD5 of the parts' MD5s, ``-N``."""
    return f"{hashlib.md5(b''.join(part_md5s), usedforsecurity=False).hexdigest()}-{len(part_md5s)}"
