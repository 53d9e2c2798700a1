"""What every handler shares: the settings, the database, the blob store and the authenticator."""

from __future__ import annotations

import dataclasses
import time

from fabric import config
from fabric.db import Database
from fabric.objectstore import access, metadata
from fabric.objectstore.auth import Authenticator
from fabric.objectstore.metadata import BucketInfo
from fabric.objectstore.request import S3Request
from fabric.objectstore.storage import BlobStore

#: Seconds a bucket's row (owner, ACL) is reused by this process. Every change this process makes
#: drops it at once; another objectstore process's change is seen this late at most.
BUCKET_CACHE_SECONDS = 1.0


@dataclasses.dataclass
class Objectstore:
    settings: config.Settings
    db: Database
    store: BlobStore
    auth: Authenticator
    _buckets: dict[str, tuple[float, BucketInfo]] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: config.Settings, db: Database) -> Objectstore:
        return cls(settings, db, BlobStore(settings.objectstore_dir),
                   Authenticator(db, settings.objectstore.region, settings.objectstore.credential_cache_seconds))

    @property
    def max_object_size(self) -> int:
        return self.settings.objectstore.max_object_size

    def lookup_bucket(self, name: str) -> BucketInfo:
        """The bucket called ``name`` (cached for a second); NoSuchBucket."""
        now = time.monotonic()
        cached = self._buckets.get(name)
        if cached is not None and now - cached[0] < BUCKET_CACHE_SECONDS:
            return cached[1]
        bucket = metadata.get_bucket(self.db, name)
        if len(self._buckets) > 10000:
            self._buckets.clear()
        self._buckets[name] = (now, bucket)
        return bucket

    def forget_bucket(self, name: str) -> None:
        """Drop the cached row of a bucket this process just changed or deleted."""
        self._buckets.pop(name, None)

    def bucket(self, req: S3Request, action: str) -> BucketInfo:
        """The request's bucket if the caller may do ``action`` to it; NoSuchBucket, AccessDenied."""
        bucket = self.lookup_bucket(req.bucket)
        access.require(bucket, req.caller, action)
        return bucket

    def recover(self) -> tuple[int, int]:
        """Remove what a crash left in the blob store (call before serving)."""
        return self.store.recover(lambda: metadata.referenced_blobs(self.db))
