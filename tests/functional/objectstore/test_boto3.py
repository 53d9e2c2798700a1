"""Every S3 operation fabric-objectstore lists, driven by boto3 with default settings against the
running processes (tests/functional/objectstore/conftest.py)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import botocore
import pytest
from botocore.exceptions import ClientError

from fabric.objectstore import checksums

pytestmark = pytest.mark.functional

MiB = 1024 * 1024


def s3_error(call, *args, **kwargs) -> tuple[str, int]:
    """(S3 error code, HTTP status) of a call that must fail."""
    with pytest.raises(ClientError) as err:
        call(*args, **kwargs)
    return err.value.response["Error"]["Code"], err.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_buckets_create_head_list_locate_and_delete(stack, s3, keys):
    name = f"life-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    assert s3.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
    listed = s3.list_buckets()
    assert [b["Name"] for b in listed["Buckets"]] == [name]
    assert listed["Owner"] == {"ID": keys.project_id, "DisplayName": keys.project_name}
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] is None  # us-east-1, as S3 says it
    assert s3_error(s3.create_bucket, Bucket=name) == ("BucketAlreadyOwnedByYou", 409)
    other = stack.client(stack.project_keys())
    assert s3_error(other.create_bucket, Bucket=name) == ("BucketAlreadyExists", 409)

    s3.put_object(Bucket=name, Key="k", Body=b"x")
    assert s3_error(s3.delete_bucket, Bucket=name) == ("BucketNotEmpty", 409)
    s3.delete_object(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)
    assert s3_error(s3.head_bucket, Bucket=name) == ("404", 404)
    assert s3_error(s3.list_objects_v2, Bucket=name) == ("NoSuchBucket", 404)
    assert s3.list_buckets()["Buckets"] == []


def test_put_get_head_with_metadata_md5_and_every_checksum_boto3_sends(s3, bucket):
    body = os.urandom(100_000)
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    put = s3.put_object(Bucket=bucket, Key="dir/file.bin", Body=body, ContentMD5=md5, ContentType="app/x",
                        Metadata={"colour": "blue"}, CacheControl="no-cache")
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert put["ChecksumCRC32"] == checksums.of("CRC32", body)  # boto3's default checksum, verified and kept
    head = s3.head_object(Bucket=bucket, Key="dir/file.bin")
    assert (head["ContentLength"], head["ContentType"], head["Metadata"], head["CacheControl"]) == \
        (len(body), "app/x", {"colour": "blue"}, "no-cache")
    assert s3.get_object(Bucket=bucket, Key="dir/file.bin")["Body"].read() == body

    for algorithm in ("CRC32", "CRC32C", "CRC64NVME", "SHA256", "SHA1"):
        answer = s3.put_object(Bucket=bucket, Key=f"sum-{algorithm}", Body=body, ChecksumAlgorithm=algorithm)
        assert answer[f"Checksum{algorithm}"] == checksums.of(algorithm, body)
        got = s3.get_object(Bucket=bucket, Key=f"sum-{algorithm}", ChecksumMode="ENABLED")
        assert got[f"Checksum{algorithm}"] == checksums.of(algorithm, body)
        assert got["Body"].read() == body  # botocore checked the checksum as it read


def test_wrong_digests_are_refused_and_store_nothing(s3, bucket):
    body = b"payload" * 1000
    wrong_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    assert s3_error(s3.put_object, Bucket=bucket, Key="bad-md5", Body=body, ContentMD5=wrong_md5) == \
        ("BadDigest", 400)
    assert s3_error(s3.put_object, Bucket=bucket, Key="bad-md5", Body=body, ContentMD5="nope") == \
        ("InvalidDigest", 400)
    for algorithm in ("CRC32", "CRC32C", "CRC64NVME", "SHA256"):
        wrong = checksums.of(algorithm, b"other")
        assert s3_error(s3.put_object, Bucket=bucket, Key="bad-sum", Body=body,
                        **{f"Checksum{algorithm}": wrong}) == ("BadDigest", 400)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_ranges_and_conditional_gets(s3, bucket):
    body = bytes(range(256)) * 4
    etag = s3.put_object(Bucket=bucket, Key="r", Body=body)["ETag"]
    part = s3.get_object(Bucket=bucket, Key="r", Range="bytes=10-19")
    assert part["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert (part["Body"].read(), part["ContentRange"]) == (body[10:20], f"bytes 10-19/{len(body)}")
    assert s3.get_object(Bucket=bucket, Key="r", Range="bytes=-5")["Body"].read() == body[-5:]
    assert s3.get_object(Bucket=bucket, Key="r", Range="bytes=1000-")["Body"].read() == body[1000:]
    assert s3_error(s3.get_object, Bucket=bucket, Key="r", Range="bytes=5000-6000") == ("InvalidRange", 416)

    assert s3.get_object(Bucket=bucket, Key="r", IfMatch=etag)["Body"].read() == body
    assert s3_error(s3.get_object, Bucket=bucket, Key="r", IfMatch='"0000"') == ("PreconditionFailed", 412)
    assert s3_error(s3.get_object, Bucket=bucket, Key="r", IfNoneMatch=etag) == ("304", 304)
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    earlier = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    assert s3_error(s3.get_object, Bucket=bucket, Key="r", IfModifiedSince=later) == ("304", 304)
    assert s3.get_object(Bucket=bucket, Key="r", IfModifiedSince=earlier)["Body"].read() == body
    assert s3_error(s3.head_object, Bucket=bucket, Key="missing") == ("404", 404)
    assert s3_error(s3.get_object, Bucket=bucket, Key="missing") == ("NoSuchKey", 404)


def test_copy_keeps_or_replaces_metadata_and_delete(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"copy me", Metadata={"a": "1"}, ContentType="text/x")
    copied = s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert copied["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(b"copy me").hexdigest()}"'
    head = s3.head_object(Bucket=bucket, Key="dst")
    assert (head["Metadata"], head["ContentType"]) == ({"a": "1"}, "text/x")
    s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src", MetadataDirective="REPLACE",
                   Metadata={"b": "2"}, ContentType="text/y")
    head = s3.head_object(Bucket=bucket, Key="dst")
    assert (head["Metadata"], head["ContentType"]) == ({"b": "2"}, "text/y")
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == b"copy me"
    assert s3_error(s3.copy_object, Bucket=bucket, Key="src", CopySource=f"{bucket}/src")[0] == "InvalidRequest"
    assert s3_error(s3.copy_object, Bucket=bucket, Key="x", CopySource=f"{bucket}/nothing") == ("NoSuchKey", 404)

    s3.delete_object(Bucket=bucket, Key="src")
    s3.delete_object(Bucket=bucket, Key="src")  # deleting what is gone succeeds, as in S3
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == b"copy me"  # the copy stands alone


def test_delete_objects_reports_each_key(s3, bucket):
    for key in ("a", "b", "c"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "a"}, {"Key": "b"}, {"Key": "zz"}]})
    assert sorted(d["Key"] for d in answer["Deleted"]) == ["a", "b", "zz"]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["c"]
    quiet = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "c"}], "Quiet": True})
    assert "Deleted" not in quiet and s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_listings_prefix_delimiter_markers_and_pages(s3, bucket):
    keys = [f"logs/{day:02d}/{n}.txt" for day in (1, 2) for n in range(3)] + ["top.txt", "z/ü space+plus"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"")
    v2 = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in v2["CommonPrefixes"]] == ["logs/", "z/"]
    assert [c["Key"] for c in v2["Contents"]] == ["top.txt"]
    nested = s3.list_objects_v2(Bucket=bucket, Prefix="logs/", Delimiter="/")
    assert [p["Prefix"] for p in nested["CommonPrefixes"]] == ["logs/01/", "logs/02/"]
    assert [c["Key"] for c in s3.list_objects_v2(Bucket=bucket, Prefix="z/")["Contents"]] == ["z/ü space+plus"]
    after = s3.list_objects_v2(Bucket=bucket, StartAfter="logs/02/1.txt")
    assert [c["Key"] for c in after["Contents"]] == ["logs/02/2.txt", "top.txt", "z/ü space+plus"]

    page = s3.list_objects_v2(Bucket=bucket, MaxKeys=4)
    assert page["IsTruncated"] and page["KeyCount"] == 4
    rest = s3.list_objects_v2(Bucket=bucket, ContinuationToken=page["NextContinuationToken"])
    assert [c["Key"] for c in page["Contents"] + rest["Contents"]] == sorted(keys, key=str.encode)
    v1 = s3.list_objects(Bucket=bucket, Delimiter="/", MaxKeys=1)
    assert v1["IsTruncated"] and v1["NextMarker"] == "logs/"
    v1_next = s3.list_objects(Bucket=bucket, Delimiter="/", Marker=v1["NextMarker"])
    assert [c["Key"] for c in v1_next["Contents"]] == ["top.txt"]
    assert [p["Prefix"] for p in v1_next["CommonPrefixes"]] == ["z/"]
    everything = [o["Key"] for p in s3.get_paginator("list_objects").paginate(Bucket=bucket, PaginationConfig={
        "PageSize": 3}) for o in p["Contents"]]
    assert everything == sorted(keys, key=str.encode)


def test_max_keys_stops_at_a_thousand(s3, bucket):
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: s3.put_object(Bucket=bucket, Key=f"k{n:05d}", Body=b""), range(1003)))
    page = s3.list_objects_v2(Bucket=bucket, MaxKeys=5000)
    assert (page["KeyCount"], page["MaxKeys"], page["IsTruncated"]) == (1000, 1000, True)
    rest = s3.list_objects_v2(Bucket=bucket, ContinuationToken=page["NextContinuationToken"])
    assert [c["Key"] for c in rest["Contents"]] == ["k01000", "k01001", "k01002"] and not rest["IsTruncated"]


def _parts(count: int, last: int = MiB) -> list[bytes]:
    return [os.urandom(5 * MiB) for _ in range(count - 1)] + [os.urandom(last)]


def test_multipart_upload_list_copy_complete_with_s3s_etag(s3, bucket):
    s3.put_object(Bucket=bucket, Key="source", Body=os.urandom(6 * MiB))
    source = s3.get_object(Bucket=bucket, Key="source")["Body"].read()
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big", Metadata={"m": "v"})["UploadId"]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [upload]
    data = _parts(2)
    etags = [s3.upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=n, Body=body)["ETag"]
             for n, body in enumerate(data, 1)]
    copied = s3.upload_part_copy(Bucket=bucket, Key="big", UploadId=upload, PartNumber=3,
                                 CopySource={"Bucket": bucket, "Key": "source"}, CopySourceRange="bytes=0-5242879")
    etags.append(copied["CopyPartResult"]["ETag"])
    whole = s3.upload_part_copy(Bucket=bucket, Key="big", UploadId=upload, PartNumber=4,
                                CopySource={"Bucket": bucket, "Key": "source"})
    etags.append(whole["CopyPartResult"]["ETag"])
    listed = s3.list_parts(Bucket=bucket, Key="big", UploadId=upload)["Parts"]
    assert [(p["PartNumber"], p["ETag"]) for p in listed] == list(zip([1, 2, 3, 4], etags, strict=True))
    # Part 2 (1 MiB) is not last: too small.
    assert s3_error(s3.complete_multipart_upload, Bucket=bucket, Key="big", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]}) == ("EntityTooSmall", 400)
    assert s3_error(s3.complete_multipart_upload, Bucket=bucket, Key="big", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": '"' + "0" * 32 + '"'}]}) == ("InvalidPart", 400)
    assert s3_error(s3.complete_multipart_upload, Bucket=bucket, Key="big", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": 3, "ETag": etags[2]}, {"PartNumber": 1, "ETag": etags[0]}]}) == \
        ("InvalidPartOrder", 400)

    chosen = [(1, etags[0]), (3, etags[2]), (4, etags[3])]
    done = s3.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in chosen]})
    digests = b"".join(bytes.fromhex(e.strip('"')) for _, e in chosen)
    assert done["ETag"] == f'"{hashlib.md5(digests).hexdigest()}-3"'
    got = s3.get_object(Bucket=bucket, Key="big")
    assert got["Body"].read() == data[0] + source[:5 * MiB] + source
    assert got["Metadata"] == {"m": "v"}
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert s3_error(s3.list_parts, Bucket=bucket, Key="big", UploadId=upload) == ("NoSuchUpload", 404)


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME", "SHA256"])
def test_multipart_checksums_are_verified_and_combined(s3, bucket, algorithm):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="sums", ChecksumAlgorithm=algorithm)["UploadId"]
    data = _parts(2, last=1000)
    bad = s3_error(s3.upload_part, Bucket=bucket, Key="sums", UploadId=upload, PartNumber=1, Body=data[0],
                   **{f"Checksum{algorithm}": checksums.of(algorithm, b"not this")})
    assert bad == ("BadDigest", 400)
    parts = []
    for number, body in enumerate(data, 1):
        answer = s3.upload_part(Bucket=bucket, Key="sums", UploadId=upload, PartNumber=number, Body=body,
                                ChecksumAlgorithm=algorithm)
        assert answer[f"Checksum{algorithm}"] == checksums.of(algorithm, body)
        parts.append({"PartNumber": number, "ETag": answer["ETag"],
                      f"Checksum{algorithm}": answer[f"Checksum{algorithm}"]})
    done = s3.complete_multipart_upload(Bucket=bucket, Key="sums", UploadId=upload,
                                        MultipartUpload={"Parts": parts})
    if algorithm == "CRC64NVME":  # always a full-object checksum in S3
        assert done["ChecksumCRC64NVME"] == checksums.of(algorithm, b"".join(data))
    else:
        assert done[f"Checksum{algorithm}"] == checksums.composite(algorithm, [p[f"Checksum{algorithm}"]
                                                                               for p in parts])
    got = s3.get_object(Bucket=bucket, Key="sums", ChecksumMode="ENABLED")
    assert got["Body"].read() == b"".join(data)


def test_abort_removes_the_upload_and_its_parts(stack, s3, bucket):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="gone")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="gone", UploadId=upload, PartNumber=1, Body=b"x" * 1000)
    s3.abort_multipart_upload(Bucket=bucket, Key="gone", UploadId=upload)
    assert s3_error(s3.abort_multipart_upload, Bucket=bucket, Key="gone", UploadId=upload) == ("NoSuchUpload", 404)
    assert s3_error(s3.upload_part, Bucket=bucket, Key="gone", UploadId=upload, PartNumber=1, Body=b"x") == \
        ("NoSuchUpload", 404)
    assert s3_error(s3.upload_part, Bucket=bucket, Key="gone", UploadId="nope", PartNumber=0, Body=b"x")[1] == 400


def test_canned_acl_public_read_opens_reads_to_anonymous_clients_only(stack, s3, bucket):
    s3.put_object(Bucket=bucket, Key="doc", Body=b"public words")
    anonymous = stack.client(stack.project_keys(), signature_version=botocore.UNSIGNED)
    assert s3_error(anonymous.get_object, Bucket=bucket, Key="doc") == ("AccessDenied", 403)
    assert s3.get_bucket_acl(Bucket=bucket)["Grants"][0]["Permission"] == "FULL_CONTROL"
    s3.put_bucket_acl(Bucket=bucket, ACL="public-read")
    assert len(s3.get_bucket_acl(Bucket=bucket)["Grants"]) == 2
    assert anonymous.get_object(Bucket=bucket, Key="doc")["Body"].read() == b"public words"
    assert [o["Key"] for o in anonymous.list_objects_v2(Bucket=bucket)["Contents"]] == ["doc"]
    assert s3_error(anonymous.put_object, Bucket=bucket, Key="doc", Body=b"defaced") == ("AccessDenied", 403)
    assert s3_error(anonymous.delete_object, Bucket=bucket, Key="doc") == ("AccessDenied", 403)
    assert s3_error(s3.put_bucket_acl, Bucket=bucket, ACL="public-read-write") == ("NotImplemented", 501)
    s3.put_bucket_acl(Bucket=bucket, ACL="private")
    assert s3_error(anonymous.get_object, Bucket=bucket, Key="doc") == ("AccessDenied", 403)
