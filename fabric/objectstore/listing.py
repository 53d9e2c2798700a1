"""Listing: ListObjects (v1) and ListObjectsV2 with prefix, delimiter, markers and max-keys.

Keys come from the database in byte order (S3's order), a batch at a time.
With a delimiter, keys sharing a common prefix are folded into one
``CommonPrefixes`` entry and the walk jumps past them in one query, so a
directory of a million keys costs one row, not a million.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import quote

from fabric.objectstore import documents, metadata
from fabric.objectstore.core import Objectstore
from fabric.objectstore.errors import S3Error
from fabric.objectstore.metadata import ObjectInfo
from fabric.objectstore.request import Reply, S3Request

#: S3 returns at most 1,000 keys per page, whatever max-keys asks.
MAX_KEYS = 1000
#: Rows read per query while walking.
BATCH = 1000


def walk(service: Objectstore, bucket_id: str, prefix: bytes, delimiter: bytes, after: bytes | None,
         max_keys: int) -> tuple[list[tuple[bytes, ObjectInfo | None]], bool]:
    """Up to ``max_keys`` entries after ``after``: (key, object) or (common prefix, None); and
    whether more follow."""
    entries: list[tuple[bytes, ObjectInfo | None]] = []
    if max_keys == 0:
        return entries, False
    position, from_key = after, None
    while True:
        rows = metadata.list_keys(service.db, bucket_id, prefix, position, BATCH, from_key=from_key)
        if not rows:
            return entries, False
        jumped = False
        for obj in rows:
            common = None
            if delimiter:
                index = obj.key.find(delimiter, len(prefix))
                if index >= 0:
                    common = obj.key[:index + len(delimiter)]
            if common is not None and after is not None and common <= after:
                pass  # the previous page ended on this common prefix: skip past it
            else:
                if len(entries) == max_keys:
                    return entries, True
                entries.append((common, None) if common is not None else (obj.key, obj))
            if common is not None:
                end = metadata.prefix_end(common)
                if end is None:
                    return entries, False
                position, from_key, jumped = None, end, True
                break
        if not jumped:
            position, from_key = rows[-1].key, None


def _encoder(req: S3Request):
    encoding = req.params.get("encoding-type")
    if encoding is None:
        return lambda value: value.decode("utf-8", "surrogateescape")
    if encoding != "url":
        raise S3Error("InvalidArgument", f"encoding-type {encoding!r} is not supported; use url",
                      ArgumentName="encoding-type", ArgumentValue=encoding)
    return lambda value: quote(value, safe="/")


def _common(req: S3Request) -> tuple[bytes, bytes, int]:
    prefix = req.params.get("prefix", "").encode("utf-8", "surrogateescape")
    delimiter = req.params.get("delimiter", "").encode("utf-8", "surrogateescape")
    max_keys = min(req.param_int("max-keys", MAX_KEYS, minimum=0), MAX_KEYS)
    return prefix, delimiter, max_keys


def _contents(entries, encode, owner: str | None) -> str:
    out = []
    for key, obj in entries:
        if obj is None:
            out.append(f"<CommonPrefixes>{documents.element('Prefix', encode(key))}</CommonPrefixes>")
            continue
        checksum = documents.element("ChecksumAlgorithm", obj.checksum_algorithm)
        out.append(f"<Contents>{documents.element('Key', encode(key))}"
                   f"{documents.element('LastModified', documents.timestamp(obj.last_modified))}"
                   f"{documents.element('ETag', chr(34) + obj.etag + chr(34))}{documents.element('Size', obj.size)}"
                   f"{owner or ''}{checksum}<StorageClass>STANDARD</StorageClass></Contents>")
    return "".join(out)


def list_objects(service: Objectstore, req: S3Request) -> Reply:
    bucket = service.bucket(req, "ListBucket")
    prefix, delimiter, max_keys = _common(req)
    encode = _encoder(req)
    marker = req.params.get("marker", "")
    entries, truncated = walk(service, bucket.id, prefix, delimiter,
                              marker.encode("utf-8", "surrogateescape") if marker else None, max_keys)
    next_marker = encode(entries[-1][0]) if truncated and delimiter else None
    head = documents.elements((("Name", bucket.name), ("Prefix", encode(prefix)), ("Marker", encode(marker.encode())),
                               ("MaxKeys", max_keys), ("Delimiter", encode(delimiter) if delimiter else None),
                               ("IsTruncated", truncated), ("NextMarker", next_marker),
                               ("EncodingType", req.params.get("encoding-type"))))
    owner = documents.owner(bucket.project_id, bucket.project_id)
    return Reply.xml(documents.document("ListBucketResult", head + _contents(entries, encode, owner)))


def _token(position: bytes) -> str:
    return base64.urlsafe_b64encode(position).decode()


def _untoken(token: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(token.encode())
    except (binascii.Error, ValueError):
        raise S3Error("InvalidArgument", "The continuation token provided is incorrect",
                      ArgumentName="continuation-token", ArgumentValue=token) from None


def list_objects_v2(service: Objectstore, req: S3Request) -> Reply:
    bucket = service.bucket(req, "ListBucket")
    prefix, delimiter, max_keys = _common(req)
    encode = _encoder(req)
    token = req.params.get("continuation-token")
    start_after = req.params.get("start-after")
    after = _untoken(token) if token else (start_after.encode("utf-8", "surrogateescape") if start_after else None)
    if token is None and start_after and after is not None and prefix and after < prefix:
        after = None  # everything with the prefix comes after start-after anyway
    entries, truncated = walk(service, bucket.id, prefix, delimiter, after, max_keys)
    head = documents.elements((
        ("Name", bucket.name), ("Prefix", encode(prefix)), ("MaxKeys", max_keys), ("KeyCount", len(entries)),
        ("Delimiter", encode(delimiter) if delimiter else None), ("IsTruncated", truncated),
        ("ContinuationToken", token), ("NextContinuationToken", _token(entries[-1][0]) if truncated else None),
        ("StartAfter", encode(start_after.encode("utf-8", "surrogateescape")) if start_after else None),
        ("EncodingType", req.params.get("encoding-type"))))
    fetch_owner = req.params.get("fetch-owner", "").lower() == "true"
    owner = documents.owner(bucket.project_id, bucket.project_id) if fetch_owner else None
    return Reply.xml(documents.document("ListBucketResult", head + _contents(entries, encode, owner)))
