"""The objectstore's rows on SQLite, PostgreSQL and MariaDB: keys listed in S3's byte order,
prefixes bounded bytewise, overwrites swapped atomically, non-empty buckets kept."""

from __future__ import annotations

import pytest

from fabric.db.models import Project
from fabric.objectstore import metadata
from fabric.objectstore.errors import S3Error

pytestmark = pytest.mark.functional


def _values(blob: str) -> dict:
    return {"blob": blob, "size": 1, "etag": "e", "content_type": "t", "meta": {}, "checksum_algorithm": None,
            "checksum_value": None, "checksum_type": None}


def test_keys_sort_bytewise_and_overwrites_return_the_replaced_blob(db):
    with db.begin() as session:
        project = Project(name="p")
        session.add(project)
        session.flush()
        project_id = project.id
    metadata.create_bucket(db, "rows", project_id, "u", "private")
    bucket = metadata.get_bucket(db, "rows")
    keys = ["a", "B", "a/b", "a\xff", "ü", "\U0001f600", "a0", "a/"]
    for n, key in enumerate(keys):
        assert metadata.put_object(db, bucket, key.encode(), _values(f"blob{n}")) is None
    listed = [o.key for o in metadata.list_keys(db, bucket.id, b"", None, 100)]
    assert listed == sorted(k.encode() for k in keys)  # UTF-8 byte order, as S3 lists
    assert [o.key for o in metadata.list_keys(db, bucket.id, b"a/", None, 100)] == [b"a/", b"a/b"]
    assert [o.key for o in metadata.list_keys(db, bucket.id, b"a", b"a/b", 100)] == [b"a0", "a\xff".encode()]
    assert metadata.put_object(db, bucket, b"a", _values("newer")) == "blob0"
    assert metadata.get_object(db, bucket.id, b"a").blob == "newer"
    found, obj = metadata.get_bucket_and_object(db, "rows", "ü".encode())
    assert (found.id, obj.blob) == (bucket.id, "blob4")
    assert metadata.get_bucket_and_object(db, "rows", b"none")[1] is None
    with pytest.raises(S3Error) as err:
        metadata.delete_bucket(db, bucket)
    assert err.value.code == "BucketNotEmpty"
    for key in keys:
        metadata.delete_object(db, bucket.id, key.encode())
    assert metadata.delete_object(db, bucket.id, b"a") is None
    metadata.delete_bucket(db, bucket)
    with pytest.raises(S3Error) as err:
        metadata.get_bucket(db, "rows")
    assert err.value.code == "NoSuchBucket"


def test_prefix_end_bounds_every_key_with_the_prefix():
    assert metadata.prefix_end(b"ab") == b"ac"
    assert metadata.prefix_end(b"a\xff") == b"b"
    assert metadata.prefix_end(b"\xff\xff") is None
