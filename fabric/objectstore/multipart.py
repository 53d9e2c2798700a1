"""Multipart uploads: Create, UploadPart, UploadPartCopy, Complete, Abort, ListParts, ListMultipartUploads.

Limits are S3's: part numbers 1 to 10,000, every part but the last at least
5 MiB, at most ``max_object_size`` (5 GiB) per part. Completing assembles the
listed parts into one new blob (kernel-side copies), then in one transaction
removes the upload and makes the key name that blob; the object's ETag is
S3's: the MD5 of the parts' binary MD5s, then ``-<number of parts>``.
"""

from __future__ import annotations

import binascii
import hashlib
import os

import eventlet

from fabric.objectstore import checksums, documents, metadata, objects, upload
from fabric.objectstore.core import Objectstore
from fabric.objectstore.errors import S3Error
from fabric.objectstore.metadata import PartInfo, UploadInfo
from fabric.objectstore.request import Reply, S3Request

MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PART_NUMBER = 10000
MAX_LIST = 1000
#: Bytes copied per step while assembling (the hub runs other requests between steps).
COPY_STEP = 8 * 1024 * 1024


def create(service: Objectstore, req: S3Request) -> Reply:
    bucket = service.bucket(req, "PutObject")
    content_type, meta = objects.object_attributes(req)
    algorithm = req.headers.get("x-amz-checksum-algorithm", "").upper() or None
    if algorithm is not None and algorithm not in checksums.ALGORITHMS:
        raise S3Error("InvalidRequest", f"x-amz-checksum-algorithm {algorithm!r} is not one of "
                                        f"{', '.join(checksums.ALGORITHMS)}")
    kind = req.headers.get("x-amz-checksum-type", "").upper() or None
    if algorithm is None and kind is not None:
        raise S3Error("InvalidRequest", "x-amz-checksum-type needs x-amz-checksum-algorithm")
    if algorithm is not None:
        kind = kind or ("FULL_OBJECT" if algorithm == "CRC64NVME" else "COMPOSITE")
        if (kind, algorithm) == ("COMPOSITE", "CRC64NVME") or (kind == "FULL_OBJECT" and algorithm.startswith("SHA")):
            raise S3Error("InvalidRequest", f"the {kind} checksum type is not supported for {algorithm}")
        if kind not in ("COMPOSITE", "FULL_OBJECT"):
            raise S3Error("InvalidRequest", f"x-amz-checksum-type {kind!r} must be COMPOSITE or FULL_OBJECT")
    upload_id = metadata.create_upload(service.db, bucket, req.key_bytes, req.caller.user_id if req.caller else "",
                                       content_type, meta, algorithm, kind)
    headers = {"x-amz-checksum-algorithm": algorithm, "x-amz-checksum-type": kind} if algorithm else {}
    body = documents.elements((("Bucket", bucket.name), ("Key", req.key), ("UploadId", upload_id)))
    return Reply.xml(documents.document("InitiateMultipartUploadResult", body), headers=headers)


def _upload(service: Objectstore, req: S3Request, action: str) -> tuple[metadata.BucketInfo, UploadInfo]:
    bucket = service.bucket(req, action)
    return bucket, metadata.get_upload(service.db, bucket.id, req.key_bytes, req.params["uploadId"])


def _part_number(req: S3Request) -> int:
    value = req.params.get("partNumber", "")
    if not value.isdigit() or not 1 <= int(value) <= MAX_PART_NUMBER:
        raise S3Error("InvalidArgument", f"Part number must be an integer between 1 and {MAX_PART_NUMBER}, "
                                         f"inclusive (got {value!r})", ArgumentName="partNumber",
                      ArgumentValue=value)
    return int(value)


def _record_part(service: Objectstore, upload_id: str, number: int, values: dict) -> None:
    try:
        replaced = metadata.put_part(service.db, upload_id, number, values)
    except Exception:
        service.store.remove([values["blob"]])
        raise
    service.store.remove([replaced])


def upload_part(service: Objectstore, req: S3Request) -> Reply:
    number = _part_number(req)
    _, info = _upload(service, req, "PutObject")
    with service.store.writer() as writer:
        received = upload.receive(req, writer, service.max_object_size, default_algorithm=info.checksum_algorithm)
        blob = writer.commit()
    _record_part(service, info.id, number, {"blob": blob, "size": received.size, "etag": received.md5,
                                            "checksum_value": received.checksum_value})
    headers = {"ETag": objects.quoted(received.md5)}
    if received.checksum_value:
        headers[checksums.header_name(received.checksum_algorithm)] = received.checksum_value
    return Reply(200, headers, b"")


def _copy_range(req: S3Request, size: int) -> tuple[int, int] | None:
    value = req.headers.get("x-amz-copy-source-range")
    if value is None:
        return None
    first, dash, last = value.removeprefix("bytes=").partition("-")
    if not value.startswith("bytes=") or not dash or not first.isdigit() or not last.isdigit() or \
            int(first) > int(last):
        raise S3Error("InvalidArgument", f"x-amz-copy-source-range {value!r} must be bytes=first-last",
                      ArgumentName="x-amz-copy-source-range", ArgumentValue=value)
    if int(last) >= size:
        raise S3Error("InvalidRange", f"the range {value} is outside the source object of {size} bytes",
                      RangeRequested=value, ActualObjectSize=size)
    return int(first), int(last)


def upload_part_copy(service: Objectstore, req: S3Request) -> Reply:
    number = _part_number(req)
    _, info = _upload(service, req, "PutObject")
    source, linked = objects.read_source(service, req)
    span = _copy_range(req, source.size)
    if span is None:
        blob, size, etag = linked, source.size, source.etag
        checksum = source.checksum_value if source.checksum_algorithm == info.checksum_algorithm else None
    else:
        try:
            blob, size, etag, checksum = _copy_span(service, linked, span, info.checksum_algorithm)
        finally:
            service.store.remove([linked])
    if info.checksum_algorithm and checksum is None:
        checksum = _blob_checksum(service, blob, info.checksum_algorithm)
    _record_part(service, info.id, number, {"blob": blob, "size": size, "etag": etag, "checksum_value": checksum})
    body = documents.element("ETag", objects.quoted(etag)) + documents.element(
        "LastModified", documents.timestamp(source.last_modified))
    if checksum:
        body += documents.element(f"Checksum{info.checksum_algorithm}", checksum)
    return Reply.xml(documents.document("CopyPartResult", body))


def _copy_span(service: Objectstore, blob: str, span: tuple[int, int], algorithm: str | None):
    """A new blob of bytes ``span`` (inclusive) of ``blob``: (blob, size, md5, checksum)."""
    md5 = hashlib.md5(usedforsecurity=False)
    hasher = checksums.new(algorithm) if algorithm else None
    with service.store.open(blob) as source, service.store.writer() as writer:
        for data in service.store.stream(source, span[0], span[1] - span[0] + 1):
            writer.write(data)
            md5.update(data)
            if hasher is not None:
                hasher.update(data)
        new_blob = writer.commit()
    return new_blob, span[1] - span[0] + 1, md5.hexdigest(), checksums.encode(hasher.digest()) if hasher else None


def _blob_checksum(service: Objectstore, blob: str, algorithm: str) -> str:
    hasher = checksums.new(algorithm)
    with service.store.open(blob) as source:
        for data in service.store.stream(source, 0, service.store.size(source)):
            hasher.update(data)
    return checksums.encode(hasher.digest())


def _requested_parts(req: S3Request, algorithm: str | None) -> list[tuple[int, str, str | None]]:
    tree = documents.parse(upload.read_document(req), "CompleteMultipartUpload")
    listed = []
    for node in documents.children(tree, "Part"):
        number = (documents.text_of(node, "PartNumber", required=True) or "").strip()
        if not number.isdigit():
            raise S3Error("MalformedXML", f"PartNumber {number!r} is not a whole number")
        etag = (documents.text_of(node, "ETag", required=True) or "").strip().strip('"')
        checksum = documents.text_of(node, f"Checksum{algorithm}") if algorithm else None
        listed.append((int(number), etag, checksum.strip() if checksum else None))
    if not listed:
        raise S3Error("MalformedXML", "CompleteMultipartUpload must list at least one <Part>")
    if len(listed) > MAX_PART_NUMBER:
        raise S3Error("MalformedXML", f"CompleteMultipartUpload lists {len(listed)} parts; at most "
                                      f"{MAX_PART_NUMBER} are allowed")
    return listed


def _chosen_parts(service: Objectstore, info: UploadInfo, listed) -> list[PartInfo]:
    stored = {part.part_number: part for part in metadata.list_parts(service.db, info.id)}
    chosen = []
    previous = 0
    for number, etag, checksum in listed:
        if number <= previous:
            raise S3Error("InvalidPartOrder", UploadId=info.id)
        previous = number
        part = stored.get(number)
        if part is None or part.etag != etag or (checksum is not None and checksum != part.checksum_value):
            raise S3Error("InvalidPart", UploadId=info.id, PartNumber=number, ETag=etag)
        chosen.append(part)
    for part in chosen[:-1]:
        if part.size < MIN_PART_SIZE:
            raise S3Error("EntityTooSmall", ProposedSize=part.size, MinSizeAllowed=MIN_PART_SIZE,
                          PartNumber=part.part_number, ETag=objects.quoted(part.etag))
    return chosen


def _assemble(service: Objectstore, parts: list[PartInfo], full_hasher) -> str:
    """One new blob holding ``parts`` in order (hashed by ``full_hasher`` when given); its id."""
    with service.store.writer() as writer:
        for part in parts:
            with service.store.open(part.blob) as source:
                if full_hasher is not None:
                    for data in service.store.stream(source, 0, part.size):
                        writer.write(data)
                        full_hasher.update(data)
                        eventlet.sleep(0)
                    continue
                offset = 0
                fd = writer.fileno()
                while offset < part.size:
                    copied = os.copy_file_range(source.fileno(), fd, min(COPY_STEP, part.size - offset), offset)
                    if copied <= 0:
                        raise S3Error("InternalError", f"part {part.part_number} is shorter than its record")
                    offset += copied
                    eventlet.sleep(0)
                writer.size += part.size
        return writer.commit()


def complete(service: Objectstore, req: S3Request) -> Reply:
    bucket, info = _upload(service, req, "PutObject")
    algorithm, kind = info.checksum_algorithm, info.checksum_type
    parts = _chosen_parts(service, info, _requested_parts(req, algorithm))
    etag = hashlib.md5(b"".join(binascii.unhexlify(p.etag) for p in parts), usedforsecurity=False).hexdigest()
    etag = f"{etag}-{len(parts)}"
    full_hasher = checksums.new(algorithm) if algorithm and kind == "FULL_OBJECT" else None
    blob = _assemble(service, parts, full_hasher)
    checksum = None
    try:
        if full_hasher is not None:
            checksum = checksums.encode(full_hasher.digest())
            sent = req.headers.get(checksums.header_name(algorithm))
            if sent is not None and sent != checksum:
                raise S3Error("BadDigest", f"The {algorithm} you specified did not match the calculated checksum.")
        elif algorithm:
            if any(p.checksum_value is None for p in parts):
                raise S3Error("InvalidRequest", f"a part lacks its {algorithm} checksum")
            checksum = checksums.composite(algorithm, [p.checksum_value for p in parts])
        size = sum(p.size for p in parts)
        values = {"blob": blob, "size": size, "etag": etag, "content_type": info.content_type, "meta": info.meta,
                  "checksum_algorithm": algorithm if checksum else None, "checksum_value": checksum,
                  "checksum_type": kind if checksum else None}
        part_blobs, replaced = metadata.end_upload(service.db, info.id, bucket, req.key_bytes, values)
    except Exception:
        service.store.remove([blob])
        raise
    service.store.remove([*part_blobs, replaced])
    body = documents.elements((("Location", f"/{bucket.name}/{req.key}"), ("Bucket", bucket.name),
                               ("Key", req.key), ("ETag", objects.quoted(etag))))
    if checksum:
        body += documents.element(f"Checksum{algorithm}", checksum) + documents.element("ChecksumType", kind)
    return Reply.xml(documents.document("CompleteMultipartUploadResult", body))


def abort(service: Objectstore, req: S3Request) -> Reply:
    bucket = service.bucket(req, "AbortMultipartUpload")
    upload_id = req.params["uploadId"]
    metadata.get_upload(service.db, bucket.id, req.key_bytes, upload_id)
    part_blobs, _ = metadata.end_upload(service.db, upload_id)
    service.store.remove(part_blobs)
    return Reply(204)


def list_parts(service: Objectstore, req: S3Request) -> Reply:
    bucket, info = _upload(service, req, "ListMultipartUploadParts")
    marker = req.param_int("part-number-marker", 0, minimum=0)
    max_parts = min(req.param_int("max-parts", MAX_LIST, minimum=0), MAX_LIST)
    parts = metadata.list_parts(service.db, info.id, marker, max_parts + 1)
    truncated = len(parts) > max_parts
    parts = parts[:max_parts]
    listed = []
    for part in parts:
        checksum = documents.element(f"Checksum{info.checksum_algorithm}", part.checksum_value) \
            if info.checksum_algorithm else ""
        listed.append(f"<Part>{documents.element('PartNumber', part.part_number)}"
                      f"{documents.element('LastModified', documents.timestamp(part.last_modified))}"
                      f"{documents.element('ETag', objects.quoted(part.etag))}{documents.element('Size', part.size)}"
                      f"{checksum}</Part>")
    owner = documents.owner(bucket.project_id, bucket.project_id)
    body = documents.elements((
        ("Bucket", bucket.name), ("Key", req.key), ("UploadId", info.id), ("PartNumberMarker", marker),
        ("NextPartNumberMarker", parts[-1].part_number if parts else marker), ("MaxParts", max_parts),
        ("IsTruncated", truncated), ("StorageClass", "STANDARD"), ("ChecksumAlgorithm", info.checksum_algorithm),
        ("ChecksumType", info.checksum_type)))
    initiator = f"<Initiator>{documents.element('ID', info.owner_id)}{documents.element('DisplayName', info.owner_id)}"\
        "</Initiator>"
    return Reply.xml(documents.document("ListPartsResult", body + initiator + owner + "".join(listed)))


def list_uploads(service: Objectstore, req: S3Request) -> Reply:
    bucket = service.bucket(req, "ListBucketMultipartUploads")
    prefix = req.params.get("prefix", "").encode("utf-8", "surrogateescape")
    key_marker = req.params.get("key-marker") or None
    upload_marker = req.params.get("upload-id-marker") or None
    max_uploads = min(req.param_int("max-uploads", MAX_LIST, minimum=0), MAX_LIST)
    found = metadata.list_uploads(service.db, bucket.id, prefix,
                                  key_marker.encode("utf-8", "surrogateescape") if key_marker else None,
                                  upload_marker, max_uploads + 1)
    truncated = len(found) > max_uploads
    found = found[:max_uploads]
    owner = documents.owner(bucket.project_id, bucket.project_id)
    listed = "".join(
        f"<Upload>{documents.element('Key', u.key.decode('utf-8', 'surrogateescape'))}"
        f"{documents.element('UploadId', u.id)}<Initiator>{documents.element('ID', u.owner_id)}</Initiator>{owner}"
        f"<StorageClass>STANDARD</StorageClass>{documents.element('Initiated', documents.timestamp(u.initiated))}"
        f"{documents.element('ChecksumAlgorithm', u.checksum_algorithm)}</Upload>" for u in found)
    body = documents.elements((
        ("Bucket", bucket.name), ("KeyMarker", key_marker or ""), ("UploadIdMarker", upload_marker or ""),
        ("NextKeyMarker", found[-1].key.decode("utf-8", "surrogateescape") if truncated else None),
        ("NextUploadIdMarker", found[-1].id if truncated else None), ("MaxUploads", max_uploads),
        ("IsTruncated", truncated), ("Prefix", prefix.decode("utf-8", "surrogateescape"))))
    return Reply.xml(documents.document("ListMultipartUploadsResult", body + listed))
