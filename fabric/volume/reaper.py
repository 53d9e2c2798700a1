"""The volume reaper: nothing stays in a transient status after its worker died.

A volume worker killed mid-create (mid-delete, mid-extend) has its message
redelivered when it comes back; if it never comes back, or the message was lost,
the row would wait forever. Each volume worker therefore sweeps, every
``[volume] reap_interval`` seconds, every volume and snapshot whose transient status
is older than ``[volume] transient_timeout`` (any host: a dead host cannot reap its
own) and ends it by compare-and-swap from the status it saw, so two sweeping workers,
or a sweep and a late handler, cannot both act:

- creating -> error, deleting -> error_deleting, extending -> error_extending, with
  the reason in ``status_reason``;
- an attach left half-way (volume reserved or attaching, its attachments never
  completed): those attachments are removed and the volume made available again
  (in-use when another attachment completed);
- an upload to an image (uploading): the volume goes back to available or in-use
  (the image stays queued or saving: a redelivered upload finishes or kills it);
- a snapshot creating -> error, deleting -> error_deleting.
"""

from __future__ import annotations

import datetime

import sqlalchemy as sa

from fabric.db import Database
from fabric.db.models import Volume, VolumeAttachment, VolumeSnapshot
from fabric.db.types import utcnow
from fabric.volume import states

#: Attachment statuses that never reached the guest.
_UNFINISHED = (states.ATTACHMENT_RESERVED, states.ATTACHMENT_ATTACHING, states.ATTACHMENT_ERROR_ATTACHING)


def _reason(status: str, timeout: float) -> str:
    return f"still {status} after {timeout:.0f}s ([volume] transient_timeout): its worker died or the request was lost"


def reap(db: Database, timeout: float, now: datetime.datetime | None = None) -> list[str]:
    """End what is stuck (see the module docstring); one line per row ended."""
    cutoff = (now or utcnow()) - datetime.timedelta(seconds=timeout)
    done: list[str] = []
    with db.begin() as session:
        stuck = session.execute(sa.select(Volume.id, Volume.status).where(
            Volume.status.in_((*states.ON_TIMEOUT, states.RESERVED, states.ATTACHING, states.DETACHING,
                               states.UPLOADING)),
            Volume.status_changed_at < cutoff)).all()
        snapshots = session.execute(sa.select(VolumeSnapshot.id, VolumeSnapshot.status).where(
            VolumeSnapshot.status.in_(states.SNAPSHOT_TRANSIENT), VolumeSnapshot.status_changed_at < cutoff)).all()
    for volume_id, status in stuck:
        with db.begin() as session:
            if status in states.ON_TIMEOUT:
                failed = states.ON_TIMEOUT[status]
                if states.swap(session, Volume, volume_id, status, failed, status_reason=_reason(status, timeout)):
                    done.append(f"volume {volume_id}: {status} -> {failed}")
                continue
            session.execute(sa.delete(VolumeAttachment).where(VolumeAttachment.volume_id == volume_id,
                                                             VolumeAttachment.status.in_(_UNFINISHED)))
            target = states.settle(session, volume_id, status, status_reason=_reason(status, timeout))
            if target is not None:
                done.append(f"volume {volume_id}: {status} -> {target}")
            else:
                session.rollback()
    for snapshot_id, status in snapshots:
        failed = states.ERROR if status == states.CREATING else states.ERROR_DELETING
        with db.begin() as session:
            if states.swap(session, VolumeSnapshot, snapshot_id, status, failed,
                           status_reason=_reason(status, timeout)):
                done.append(f"snapshot {snapshot_id}: {status} -> {failed}")
    return done
