"""Who is asking: an access key's signature checked, or an anonymous request.

An access key is an EC2 credential kept by Identity (``/v3/users/{id}/credentials/OS-EC2``).
Its secret, user and project are read from the shared database and kept for
``[objectstore] credential_cache_seconds`` (a handful of seconds: a deleted or
disabled credential stops working that long after), so a busy client costs
one signature check per request, not one query.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fabric.db import Database
from fabric.db.types import utcnow
from fabric.objectstore import metadata, sigv4
from fabric.objectstore.errors import S3Error
from fabric.objectstore.metadata import Principal
from fabric.objectstore.request import S3Request


class Authenticator:
    """Checks requests' SigV4 signatures against credentials in the database."""

    def __init__(self, db: Database, region: str, cache_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.region = region
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, Principal]] = {}

    def _principal(self, access_key: str) -> Principal:
        now = self._clock()
        cached = self._cache.get(access_key)
        if cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1]
        found = metadata.principal(self.db, access_key)
        if found is None:
            self._cache.pop(access_key, None)
            raise S3Error("InvalidAccessKeyId", AWSAccessKeyId=access_key)
        if len(self._cache) > 10000:
            self._cache.clear()
        self._cache[access_key] = (now, found)
        return found

    def authenticate(self, req: S3Request) -> Principal | None:
        """The principal whose key signed ``req`` (None for an unsigned request), recording the
        claim and signing key on ``req`` for streaming uploads.

        Raises S3Error: AuthorizationHeaderMalformed (or AuthorizationQueryParametersError)
        for a bad credential scope or another region, RequestTimeTooSkewed, AccessDenied for
        an expired presigned URL, InvalidAccessKeyId, SignatureDoesNotMatch.
        """
        claim = sigv4.parse(req.headers, req.params)
        if claim is None:
            return None
        if claim.region != self.region:
            code = "AuthorizationQueryParametersError" if claim.presigned else "AuthorizationHeaderMalformed"
            raise S3Error(code, f"the region '{claim.region}' is wrong; expecting '{self.region}'",
                          Region=self.region)
        sigv4.check_time(claim, utcnow())
        principal = self._principal(claim.access_key)
        req.signing_key = sigv4.verify(claim, principal.secret, req.method, req.raw_path, req.raw_query,
                                       req.headers)
        req.claim = claim
        return principal
