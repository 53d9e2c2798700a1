"""The aws CLI (100 MiB multipart copy, sync both ways), a presigned GET through curl, a signed
streaming (aws-chunked) upload, virtual-host addressing, and `openstack ec2 credentials` through
the real CLI, against the running fabric-api and fabric-objectstore processes."""

from __future__ import annotations

import datetime
import hashlib
import http.client
import json
import os
import subprocess
import time
import uuid
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from fabric.db.types import utcnow
from fabric.objectstore import sigv4
from tests.functional.objectstore.conftest import PASSWORD, REGION

pytestmark = pytest.mark.functional

MiB = 1024 * 1024


def test_aws_cli_copies_100_mib_in_parts_with_checksums_and_back(stack, keys, tmp_path):
    bucket = f"cli-{uuid.uuid4().hex[:10]}"
    stack.aws(keys, "s3", "mb", f"s3://{bucket}")
    source = tmp_path / "big.bin"
    with open(source, "wb") as out:
        for _ in range(100):
            out.write(os.urandom(MiB))
    stack.aws(keys, "s3", "cp", str(source), f"s3://{bucket}/big.bin")
    head = json.loads(stack.aws(keys, "s3api", "head-object", "--bucket", bucket, "--key", "big.bin",
                                "--checksum-mode", "ENABLED").stdout)
    assert head["ContentLength"] == 100 * MiB
    assert head["ETag"].endswith('-13"')  # 8 MiB parts: the CLI uploaded it in 13 parts
    assert head["ChecksumCRC32"].endswith("-13")  # per-part CRC32s the CLI sent, combined as S3 does
    back = tmp_path / "back.bin"
    stack.aws(keys, "s3", "cp", f"s3://{bucket}/big.bin", str(back))
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(source.read_bytes()).digest()


def test_aws_cli_sync_a_tree_up_and_back_byte_identical(stack, keys, tmp_path):
    bucket = f"sync-{uuid.uuid4().hex[:10]}"
    stack.aws(keys, "s3", "mb", f"s3://{bucket}")
    tree = tmp_path / "tree"
    files = {"a.txt": b"alpha", "dir/b.bin": os.urandom(70_000), "dir/sub/c space.txt": b"",
             "dir/sub/ü.dat": os.urandom(9 * MiB)}
    for name, data in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    stack.aws(keys, "s3", "sync", str(tree), f"s3://{bucket}/tree")
    listed = json.loads(stack.aws(keys, "s3api", "list-objects-v2", "--bucket", bucket).stdout)
    assert sorted(o["Key"] for o in listed["Contents"]) == sorted(f"tree/{n}" for n in files)
    back = tmp_path / "back"
    stack.aws(keys, "s3", "sync", f"s3://{bucket}/tree", str(back))
    got = {str(p.relative_to(back)): p.read_bytes() for p in back.rglob("*") if p.is_file()}
    assert got == files
    # A second sync finds nothing to do.
    assert stack.aws(keys, "s3", "sync", str(tree), f"s3://{bucket}/tree").stdout == ""


def test_presigned_get_through_curl_and_its_expiry(stack, keys, s3, bucket):
    s3.put_object(Bucket=bucket, Key="shared/report.txt", Body=b"for your eyes")
    # botocore presigns with Signature Version 2 unless told otherwise; fabric speaks SigV4 only.
    legacy = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "shared/report.txt"})
    done = subprocess.run(["curl", "-sS", legacy], capture_output=True, timeout=60, check=True)
    assert b"Signature Version 2 is not supported" in done.stdout
    s3 = stack.client(keys, signature_version="s3v4")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "shared/report.txt"},
                                    ExpiresIn=300)
    done = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", url], capture_output=True, timeout=60, check=True)
    assert done.stdout == b"for your eyes\n200"
    tampered = url.replace("report.txt", "report.txT")
    done = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", tampered], capture_output=True, timeout=60,
                          check=True)
    assert done.stdout.endswith(b"403") and b"<Code>SignatureDoesNotMatch</Code>" in done.stdout
    expired = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "shared/report.txt"},
                                        ExpiresIn=1)
    parts = dict(p.split("=", 1) for p in urlsplit(expired).query.split("&"))
    signed_at = sigv4.parse_amz_date(parts["X-Amz-Date"])
    wait = (signed_at + datetime.timedelta(seconds=2) - utcnow()).total_seconds()
    if wait > 0:
        time.sleep(wait)  # the one wait on a clock: expiry is a matter of time, not of an event
    done = subprocess.run(["curl", "-sS", expired], capture_output=True, timeout=60, check=True)
    assert b"<Code>AccessDenied</Code>" in done.stdout and b"Request has expired" in done.stdout


def _signed_streaming_put(stack, keys, bucket: str, key: str, chunks: list[bytes], *, corrupt: bool = False):
    """PUT with STREAMING-AWS4-HMAC-SHA256-PAYLOAD: botocore signs the seed, each chunk is signed on it."""
    body_length = sum(len(c) for c in chunks)
    url = f"{stack.s3_url}/{bucket}/{key}"
    frames = [(c, None) for c in chunks] + [(b"", None)]
    encoded_length = sum(len(b"%x;chunk-signature=" % len(c)) + 64 + 2 + len(c) + 2 for c, _ in frames)
    request = AWSRequest("PUT", url, headers={
        "Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(body_length),
        "Content-Length": str(encoded_length)})

    class Streaming(S3SigV4Auth):
        def payload(self, request):
            return sigv4.STREAMING_SIGNED

    Streaming(Credentials(keys.access, keys.secret), "s3", REGION).add_auth(request)
    seed = request.headers["Authorization"].rsplit("Signature=", 1)[1]
    amz_date = request.headers["X-Amz-Date"]
    scope = f"{amz_date[:8]}/{REGION}/s3/aws4_request"
    key_bytes = sigv4.signing_key(keys.secret, amz_date[:8], REGION, "s3")
    previous, body = seed, bytearray()
    for data, _ in frames:
        signature = sigv4.sign(key_bytes, sigv4.chunk_string_to_sign(amz_date, scope, previous,
                                                                      hashlib.sha256(data).hexdigest()))
        body += b"%x;chunk-signature=%s\r\n%s\r\n" % (len(data), signature.encode(), data)
        previous = signature
    if corrupt:
        body[100] ^= 1
    connection = http.client.HTTPConnection(urlsplit(stack.s3_url).netloc, timeout=60)
    connection.request("PUT", f"/{bucket}/{key}", bytes(body), dict(request.headers.items()))
    answer = connection.getresponse()
    return answer.status, answer.read()


def test_signed_streaming_upload_verifies_every_chunk(stack, keys, s3, bucket):
    chunks = [os.urandom(64 * 1024), os.urandom(64 * 1024), os.urandom(1000)]
    status, _ = _signed_streaming_put(stack, keys, bucket, "streamed", chunks)
    assert status == 200
    assert s3.get_object(Bucket=bucket, Key="streamed")["Body"].read() == b"".join(chunks)
    status, body = _signed_streaming_put(stack, keys, bucket, "tampered", chunks, corrupt=True)
    assert status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in body
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="tampered")


def test_virtual_host_style_names_the_bucket_in_the_host(stack, keys, s3, bucket):
    s3.put_object(Bucket=bucket, Key="vh/key.txt", Body=b"virtual")
    host = f"{bucket}.s3.fabric.test:{urlsplit(stack.s3_url).port}"
    request = AWSRequest("GET", f"http://{host}/vh/key.txt", headers={"Host": host})
    S3SigV4Auth(Credentials(keys.access, keys.secret), "s3", REGION).add_auth(request)
    connection = http.client.HTTPConnection(urlsplit(stack.s3_url).netloc, timeout=60)
    connection.request("GET", "/vh/key.txt", headers=dict(request.headers.items()))
    answer = connection.getresponse()
    assert (answer.status, answer.read()) == (200, b"virtual")


def test_openstack_ec2_credentials_create_list_delete(stack, osc, keys):
    env = {"OS_AUTH_URL": f"{stack.api_url}/v3", "OS_USERNAME": f"{keys.project_name}-user",
           "OS_PASSWORD": PASSWORD, "OS_PROJECT_NAME": keys.project_name, "OS_USER_DOMAIN_NAME": "Default",
           "OS_PROJECT_DOMAIN_NAME": "Default", "OS_IDENTITY_API_VERSION": "3"}
    created = osc(env, "ec2", "credentials", "create")
    assert created["project_id"] == keys.project_id and created["user_id"] == keys.user_id
    listed = osc(env, "ec2", "credentials", "list")
    assert sorted(row["Access"] for row in listed) == sorted([keys.access, created["access"]])
    shown = osc(env, "ec2", "credentials", "show", created["access"])
    assert shown["secret"] == created["secret"]
    fresh = stack.client(type(keys)(created["access"], created["secret"], keys.user_id, keys.project_id,
                                    keys.project_name))
    fresh.create_bucket(Bucket=f"ec2-{uuid.uuid4().hex[:10]}")
    osc(env, "ec2", "credentials", "delete", created["access"], json_out=False)
    assert [row["Access"] for row in osc(env, "ec2", "credentials", "list")] == [keys.access]
    with pytest.raises(ClientError) as err:
        fresh.list_buckets()
    assert err.value.response["Error"]["Code"] == "InvalidAccessKeyId"


def test_every_answer_has_one_content_length_so_strict_parsers_keep_the_connection(stack, keys, bucket):
    # http-parser (wrk, Node) drops a connection whose answer repeats Content-Length; eventlet's
    # server used to add a second one next to the application's lower-case one.
    connection = http.client.HTTPConnection(urlsplit(stack.s3_url).netloc, timeout=60)
    for method, path, body, status in (("PUT", f"/{bucket}/one-length", b"x" * 1000, 200),
                                       ("GET", f"/{bucket}/one-length", b"", 200),
                                       ("GET", f"/{bucket}/no-such-key", b"", 404)):
        request = AWSRequest(method, f"{stack.s3_url}{path}", data=body)
        S3SigV4Auth(Credentials(keys.access, keys.secret), "s3", REGION).add_auth(request)
        connection.request(method, path, body, dict(request.headers.items()))  # one keep-alive connection
        answer = connection.getresponse()
        content = answer.read()
        assert answer.status == status, content
        assert answer.msg.get_all("Content-Length") == [str(len(content))], (method, path, answer.getheaders())
