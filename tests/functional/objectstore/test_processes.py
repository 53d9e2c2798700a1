"""Several processes serve one objectstore (``[objectstore] workers = 2`` in the stack): a bucket
change made through one is seen through every other at once, and helpers die with their worker."""

from __future__ import annotations

import http.client
import os
import signal
from urllib.parse import urlsplit

from tests.fixtures.processes import alive, helper_pids, wait_until


def _anonymous_head(stack, bucket: str) -> int:
    """HEAD the bucket without a signature on a new connection (the kernel picks its process)."""
    connection = http.client.HTTPConnection(urlsplit(stack.s3_url).netloc, timeout=30)
    try:
        connection.request("HEAD", f"/{bucket}")
        return connection.getresponse().status
    finally:
        connection.close()


def test_an_acl_change_through_one_process_is_seen_by_every_other_at_once(stack, s3, bucket):
    s3.put_bucket_acl(Bucket=bucket, ACL="public-read")
    # Every process reads (and caches) the public bucket; 24 connections reach both but with 2**-23 odds.
    assert {_anonymous_head(stack, bucket) for _ in range(24)} == {200}
    s3.put_bucket_acl(Bucket=bucket, ACL="private")
    assert {_anonymous_head(stack, bucket) for _ in range(24)} == {403}
    s3.delete_bucket(Bucket=bucket)
    assert {_anonymous_head(stack, bucket) for _ in range(24)} == {404}


def _helpers(parent: int) -> list[int]:
    return helper_pids(parent, "fabric.cmd.objectstore")


def test_helpers_die_with_their_worker_however_it_dies(stack, s3, bucket):
    helpers = _helpers(stack.objectstore.pid)
    assert len(helpers) == 1  # workers = 2: the worker's own process and one helper
    os.kill(stack.objectstore.pid, signal.SIGKILL)
    stack.objectstore.wait(30)
    wait_until(lambda: not any(alive(pid) for pid in helpers), timeout=30, what="the helper to die")
    stack.restart_objectstore()
    assert len(_helpers(stack.objectstore.pid)) == 1
    s3.put_object(Bucket=bucket, Key="after", Body=b"served again")
    assert s3.get_object(Bucket=bucket, Key="after")["Body"].read() == b"served again"
