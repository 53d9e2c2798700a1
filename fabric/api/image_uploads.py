"""The lease of an image upload through the API: no image stays ``saving`` after its uploader died.

An upload (``PUT /v2/images/{id}/file``) takes a queued image to ``saving`` with a lease
(``images.upload_expires_at``, ``[api] image_upload_lease`` seconds ahead), and a green thread
of the uploading process renews it every third of the lease until the upload ends. The lease
says the uploading process is alive, not that bytes arrive: a client that stops sending is
ended by the server's socket timeout (408, and the image back to ``queued``). An API process
killed mid-upload renews nothing, and once its lease has lapsed:

- the API's reaper (:func:`reap`, run by every API worker each lease) puts the image back to
  ``queued``, as a failed upload leaves it, so its owner may upload again;
- a new upload may take the image over before that (:meth:`Upload.begin` takes a ``saving``
  image whose lease lapsed).

Every step is a compare-and-swap on the lease this upload holds, so an upload that lost its
image (deleted, or taken over after the lease lapsed, say while its process was stopped)
learns so at the next renewal and stops (409) instead of finishing over the newcomer. A lapsed
upload leaves no object behind: a single PUT the objectstore never received whole is not
stored, and an abandoned multipart upload's parts are the objectstore's to forget. Images
other writers fill (a compute snapshot, a volume upload) carry no lease (NULL): their own
workers end what they start.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from collections.abc import Callable, Iterator
from typing import Any

import eventlet
import sqlalchemy as sa

from fabric import exception
from fabric.db import Database
from fabric.db.models import Image
from fabric.db.types import utcnow

LOG = logging.getLogger(__name__)

#: How much of the lease passes between renewals: a renewal may fail (the database briefly
#: away) once and the lease still holds at the next.
RENEW_FRACTION = 1 / 3


def _lapsed(now: datetime.datetime) -> sa.ColumnElement[bool]:
    return sa.and_(Image.status == "saving", Image.upload_expires_at < now)


class Upload:
    """One upload's hold on its image: :meth:`begin`, then stream under :meth:`held` through
    :meth:`reading`, then :meth:`finish` or :meth:`abandon`."""

    def __init__(self, db: Database, image_id: str, lease: float) -> None:
        self.db = db
        self.image_id = image_id
        self.lease = lease
        #: The lease this upload holds (what every later step compares with).
        self.expires: datetime.datetime | None = None
        #: Why the image is no longer this upload's, once a renewal found out.
        self.lost: exception.Conflict | None = None

    def _held(self) -> sa.ColumnElement[bool]:
        return sa.and_(Image.id == self.image_id, Image.status == "saving", Image.upload_expires_at == self.expires)

    def _ahead(self) -> datetime.datetime:
        return utcnow() + datetime.timedelta(seconds=self.lease)

    def begin(self, session: Any) -> bool:
        """Take the image, in ``session``: queued, or saving under a lapsed lease (its uploader
        died), becomes saving under this upload's lease. False when it is neither."""
        now, expires = utcnow(), self._ahead()
        taken = session.execute(sa.update(Image).where(
            Image.id == self.image_id, sa.or_(Image.status == "queued", _lapsed(now)))
            .values(status="saving", upload_expires_at=expires)).rowcount == 1
        if taken:
            self.expires = expires
        return taken

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """The lease renewed every third of it while the block runs."""
        renewer = eventlet.spawn(self._renew_until_lost)
        try:
            yield
        finally:
            renewer.kill()

    def _renew_until_lost(self) -> None:
        while self.lost is None:
            eventlet.sleep(self.lease * RENEW_FRACTION)
            try:
                self.renew()
            except exception.Conflict as lost:
                self.lost = lost
            except Exception:  # the database briefly away: the lease holds until the next try
                LOG.exception("image %s: could not renew its upload's lease; retrying", self.image_id)

    def renew(self) -> None:
        """Move the lease a whole lease ahead; Conflict when the image is no longer this upload's."""
        expires = self._ahead()
        with self.db.begin() as session:
            if session.execute(sa.update(Image).where(self._held()).values(upload_expires_at=expires)).rowcount != 1:
                raise self._why_lost(session)
        self.expires = expires

    def _why_lost(self, session: Any) -> exception.Conflict:
        if session.get(Image, self.image_id) is None:
            return exception.Conflict(reason=f"image {self.image_id} was deleted during the upload")
        return exception.Conflict(reason=f"image {self.image_id} is no longer this upload's: another upload took "
                                         f"it over after this one's lease ([api] image_upload_lease) lapsed")

    def reading(self, read: Callable[[int], bytes]) -> Callable[[int], bytes]:
        """``read`` of the request body, stopped (Conflict) once the image is no longer this
        upload's; a body that stops arriving or breaks is RequestBodyStopped (408), the
        client's doing, not the server's."""
        received = 0

        def read_body(size: int) -> bytes:
            nonlocal received
            if self.lost is not None:
                raise self.lost
            try:
                data = read(size)
            except (OSError, ValueError) as exc:  # timeouts, resets, a broken chunked encoding
                raise exception.RequestBodyStopped(received=received, reason=str(exc) or type(exc).__name__) from exc
            received += len(data)
            return data

        return read_body

    def finish(self, facts: dict[str, Any]) -> bool:
        """saving -> active with ``facts`` (size, checksums); False when the image was deleted
        meanwhile (its bytes are then the caller's to remove). Conflict when another upload took
        it over (its lease lapsed while this process was stopped): the bytes under the image's
        key are then the newcomer's to write."""
        with self.db.begin() as session:
            if session.execute(sa.update(Image).where(self._held())
                               .values(status="active", upload_expires_at=None, **facts)).rowcount == 1:
                return True
            if session.get(Image, self.image_id) is None:
                return False
            raise self._why_lost(session)

    def abandon(self) -> None:
        """saving -> queued (a failed upload), if the image is still this upload's."""
        with self.db.begin() as session:
            session.execute(sa.update(Image).where(self._held()).values(status="queued", upload_expires_at=None))


def reap(db: Database, now: datetime.datetime | None = None) -> list[str]:
    """Every image saving under a lapsed lease (its API process died mid-upload) back to
    queued; the ids ended (each by compare-and-swap: an upload taking the image over first wins)."""
    now = now or utcnow()
    with db.begin() as session:
        stalled = session.scalars(sa.select(Image.id).where(_lapsed(now))).all()
        return [image_id for image_id in stalled if session.execute(
            sa.update(Image).where(Image.id == image_id, _lapsed(now))
            .values(status="queued", upload_expires_at=None)).rowcount == 1]
