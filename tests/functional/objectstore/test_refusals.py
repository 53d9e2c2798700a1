"""What the objectstore refuses, always with S3's 4xx codes and never a 5xx: another project's keys,
a wrong secret, an unknown key, a skewed clock, bad bucket names, oversized keys, impossible
ranges; and a process killed in the middle of an upload leaves nothing behind after restart."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import pytest
import sqlalchemy as sa
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from fabric.db.models import StoredObject, UploadPart
from fabric.objectstore import segments
from tests.fixtures.processes import wait_until
from tests.functional.objectstore.conftest import REGION, Keys

pytestmark = pytest.mark.functional


def s3_error(call, *args, **kwargs) -> tuple[str, int]:
    with pytest.raises(ClientError) as err:
        call(*args, **kwargs)
    return err.value.response["Error"]["Code"], err.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_another_projects_keys_get_access_denied_and_change_nothing(stack, s3, bucket):
    s3.put_object(Bucket=bucket, Key="mine", Body=b"private")
    other = stack.client(stack.project_keys())
    denied = ("AccessDenied", 403)
    assert s3_error(other.get_object, Bucket=bucket, Key="mine") == denied
    assert s3_error(other.head_object, Bucket=bucket, Key="mine") == ("403", 403)
    assert s3_error(other.put_object, Bucket=bucket, Key="mine", Body=b"overwritten") == denied
    assert s3_error(other.delete_object, Bucket=bucket, Key="mine") == denied
    assert s3_error(other.list_objects_v2, Bucket=bucket) == denied
    assert s3_error(other.delete_bucket, Bucket=bucket) == denied
    assert s3_error(other.copy_object, Bucket=f"theirs-{uuid.uuid4().hex[:8]}", Key="x",
                    CopySource=f"{bucket}/mine")[1] in (403, 404)
    assert s3_error(other.create_multipart_upload, Bucket=bucket, Key="m") == denied
    assert [b["Name"] for b in other.list_buckets()["Buckets"]] == []
    assert s3.get_object(Bucket=bucket, Key="mine")["Body"].read() == b"private"


def test_wrong_secret_and_unknown_key_are_refused(stack, keys, bucket):
    wrong = stack.client(Keys(keys.access, keys.secret[:-1] + "x", keys.user_id, keys.project_id,
                              keys.project_name))
    assert s3_error(wrong.list_objects_v2, Bucket=bucket) == ("SignatureDoesNotMatch", 403)
    assert s3_error(wrong.put_object, Bucket=bucket, Key="k", Body=b"x") == ("SignatureDoesNotMatch", 403)
    unknown = stack.client(Keys("0" * 32, keys.secret, keys.user_id, keys.project_id, keys.project_name))
    assert s3_error(unknown.list_buckets) == ("InvalidAccessKeyId", 403)
    status, body = _raw(stack, keys, "GET", f"/{bucket}", region="eu-west-1")
    assert status == 400 and b"<Code>AuthorizationHeaderMalformed</Code>" in body
    assert b"<Region>us-east-1</Region>" in body
    # ... which botocore reads to sign again for the right region, as it does with AWS.
    eu = boto3.session.Session().client("s3", endpoint_url=stack.s3_url, region_name="eu-west-1",
                                        aws_access_key_id=keys.access, aws_secret_access_key=keys.secret)
    assert eu.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def _raw_unsigned_status(stack) -> int:
    connection = http.client.HTTPConnection(urlsplit(stack.s3_url).netloc, timeout=60)
    connection.request("GET", "/")
    return connection.getresponse().status


def _raw(stack, keys: Keys, method: str, path: str, headers: dict | None = None, body: bytes = b"",
         *, sign: bool = True, when: str | None = None, region: str = REGION) -> tuple[int, bytes]:
    """One request signed by botocore's SigV4 for ``region`` (its x-amz-date then replaced by ``when``)."""
    url = f"{stack.s3_url}{path}"
    request = AWSRequest(method, url, data=body, headers=dict(headers or {}))
    if sign:
        S3SigV4Auth(Credentials(keys.access, keys.secret), "s3", region).add_auth(request)
        if when:
            request.headers.replace_header("X-Amz-Date", when)
    connection = http.client.HTTPConnection(urlsplit(stack.s3_url).netloc, timeout=60)
    connection.request(method, path, body, dict(request.headers.items()))
    answer = connection.getresponse()
    return answer.status, answer.read()



def test_a_header_line_that_is_no_field_is_answered_400_on_a_connection_that_still_works(stack):
    """The objectstore's own HTTP server (fabric.objectstore.http_server) refuses what is not
    ``name: value`` instead of taking it for the start of a body."""
    address = urlsplit(stack.s3_url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nthis is not a header\r\n\r\n")
        status = sock.makefile("rb").readline()
    assert status.split()[1] == b"400", status
    assert _raw_unsigned_status(stack) == 403  # the server still answers

@pytest.mark.parametrize("name", ["Upper-Case", "ab", "a" * 64, "under_score", "-leading", "trailing-",
                                  "two..dots", "192.168.5.4", "xn--punycode", "dot.-hyphen"])
def test_bad_bucket_names_get_invalid_bucket_name(stack, keys, name):
    status, body = _raw(stack, keys, "PUT", f"/{name}")
    assert status == 400 and b"<Code>InvalidBucketName</Code>" in body, body


def test_oversized_keys_and_metadata_and_impossible_ranges_are_4xx(stack, keys, s3, bucket):
    assert s3_error(s3.put_object, Bucket=bucket, Key="k" * 1025, Body=b"x") == ("KeyTooLongError", 400)
    s3.put_object(Bucket=bucket, Key="k" * 1024, Body=b"x")  # exactly the limit is fine
    assert s3_error(s3.put_object, Bucket=bucket, Key="ü" * 513, Body=b"x") == ("KeyTooLongError", 400)
    assert s3_error(s3.put_object, Bucket=bucket, Key="meta", Body=b"x", Metadata={"big": "v" * 3000}) == \
        ("MetadataTooLarge", 400)
    s3.put_object(Bucket=bucket, Key="ten", Body=b"0123456789")
    for wanted in ("bytes=10-20", "bytes=100-", "bytes=-0"):
        assert s3_error(s3.get_object, Bucket=bucket, Key="ten", Range=wanted) == ("InvalidRange", 416)
    status, body = _raw(stack, keys, "GET", f"/{bucket}/ten", {"Range": "bytes=50-60"})
    assert status == 416 and b"<ActualObjectSize>10</ActualObjectSize>" in body
    assert s3_error(s3.list_objects_v2, Bucket=bucket, MaxKeys=-1)[1] == 400
    assert s3_error(s3.upload_part, Bucket=bucket, Key="m", UploadId="x", PartNumber=10001, Body=b"x")[1] == 400


def test_skewed_clocks_unsigned_writes_and_unsupported_features_are_4xx_or_501(stack, keys, bucket):
    status, body = _raw(stack, keys, "GET", f"/{bucket}", when="20200101T000000Z")
    assert status == 403 and b"<Code>RequestTimeTooSkewed</Code>" in body
    status, body = _raw(stack, keys, "PUT", f"/{bucket}/anon", body=b"x", sign=False)
    assert status == 403 and b"<Code>AccessDenied</Code>" in body
    status, body = _raw(stack, keys, "GET", f"/{bucket}?policy")
    assert status == 501 and b"<Code>NotImplemented</Code>" in body
    status, body = _raw(stack, keys, "POST", f"/{bucket}?delete", body=b"<Delete><Object><Key>a</Key>",
                        headers={"Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg=="})
    assert status == 400 and (b"<Code>BadDigest</Code>" in body or b"<Code>MalformedXML</Code>" in body)


def _blob_files(data_dir: Path) -> set[str]:
    return {p.name for p in (data_dir / "blobs").rglob("*") if p.is_file()}


def _segment_data(data_dir: Path) -> set[tuple[str, int, int]]:
    """(segment, start, end) of each block of packed blobs' segments that holds data."""
    found = set()
    for path in (data_dir / "segments").iterdir():
        with open(path, "rb") as file:
            offset = 0
            while True:
                try:
                    start = os.lseek(file.fileno(), offset, os.SEEK_DATA)
                except OSError:  # ENXIO: only holes past offset
                    break
                offset = os.lseek(file.fileno(), start, os.SEEK_HOLE)
                found.update((path.name, block, block + segments.BLOCK)
                             for block in range(start, offset, segments.BLOCK))
    return found


def _named_blocks(packed: set[str]) -> set[tuple[str, int, int]]:
    blocks = set()
    for blob in packed:
        segment, offset, length = segments.parse(blob)
        blocks.update((segment, block, block + segments.BLOCK)
                      for block in range(offset, offset + length, segments.BLOCK))
    return blocks


def test_a_process_killed_mid_upload_leaves_nothing_visible_or_orphaned(stack, keys, s3, bucket):
    s3.put_object(Bucket=bucket, Key="kept", Body=b"before the crash")
    # Released, but the crash comes before the grace period ends: its blocks are never punched.
    s3.put_object(Bucket=bucket, Key="doomed", Body=os.urandom(64 * 1024))
    s3.delete_object(Bucket=bucket, Key="doomed")
    before = _blob_files(stack.data_dir)  # the session's other tests' blobs among them
    total = 64 * 1024 * 1024
    # Signed with UNSIGNED-PAYLOAD (botocore signs a hash of the body over plain HTTP otherwise).
    request = AWSRequest("PUT", f"{stack.s3_url}/{bucket}/half", headers={"Content-Length": str(total)})

    class Unsigned(S3SigV4Auth):
        def payload(self, request):
            return "UNSIGNED-PAYLOAD"

    Unsigned(Credentials(keys.access, keys.secret), "s3", REGION).add_auth(request)
    connection = http.client.HTTPConnection(urlsplit(stack.s3_url).netloc, timeout=60)
    connection.putrequest("PUT", f"/{bucket}/half", skip_accept_encoding=True)
    for name, value in request.headers.items():
        connection.putheader(name, value)
    connection.endheaders()
    for _ in range(8):
        connection.send(os.urandom(1024 * 1024))
    blobs = stack.data_dir / "blobs"

    def partial() -> list[Path]:  # the upload's file: written in place, named by no row yet
        return [p for p in blobs.rglob("*") if p.is_file() and p.name not in before and
                p.stat().st_size >= 1024 * 1024]

    wait_until(lambda: partial(), timeout=30, what="the upload's file to fill", workers=[stack.objectstore])
    os.kill(stack.objectstore.pid, signal.SIGKILL)
    stack.objectstore.wait(30)
    connection.close()
    left = partial()
    assert left  # the crash left the upload's bytes behind ...

    stack.restart_objectstore()
    assert not any(p.exists() for p in left)  # ... which the restart removed
    assert s3_error(s3.head_object, Bucket=bucket, Key="half") == ("404", 404)
    assert s3.get_object(Bucket=bucket, Key="kept")["Body"].read() == b"before the crash"
    with stack.db.begin() as session:
        named = set(session.scalars(sa.select(StoredObject.blob))) | set(session.scalars(sa.select(UploadPart.blob)))
    packed = {blob for blob in named if segments.is_packed(blob)}
    assert packed  # "kept" and the session's other small objects
    assert _blob_files(stack.data_dir) == named - packed  # every file has its row and every row its file
    # Every block of the segments that holds data is a block of a packed blob a row names, and
    # every such block holds data.
    assert _segment_data(stack.data_dir) == _named_blocks(packed)
