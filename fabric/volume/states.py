"""The one table of volume, snapshot and attachment statuses (Cinder's names) and the
compare-and-swap every status change goes through.

Nothing writes ``status`` of a volume, snapshot or attachment except :func:`swap`,
so every transition names the statuses it may start from and two concurrent
requests cannot both win.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from fabric.db.models import Volume, VolumeAttachment
from fabric.db.types import utcnow

# --- volumes -----------------------------------------------------------------------------
CREATING = "creating"
AVAILABLE = "available"
RESERVED = "reserved"
ATTACHING = "attaching"
IN_USE = "in-use"
DETACHING = "detaching"
EXTENDING = "extending"
UPLOADING = "uploading"
DELETING = "deleting"
DELETED = "deleted"
ERROR = "error"
ERROR_DELETING = "error_deleting"
ERROR_EXTENDING = "error_extending"
MAINTENANCE = "maintenance"

#: Statuses a volume only passes through: the reaper ends those that last too long.
TRANSIENT = (CREATING, ATTACHING, DETACHING, EXTENDING, DELETING, UPLOADING)
#: Where a delete may start (Cinder: not while attached, not mid-operation).
DELETABLE = (AVAILABLE, ERROR, ERROR_EXTENDING, ERROR_DELETING)
#: Where a volume may be snapshotted without ``force`` (with force: in-use too).
SNAPSHOTTABLE = (AVAILABLE,)
#: Where an upload to an image may start (with ``force``: in-use too).
UPLOADABLE = (AVAILABLE,)
#: What a transient status becomes when its worker died (the reaper's table; the others go
#: back to available or in-use, see :func:`settle`).
ON_TIMEOUT = {CREATING: ERROR, DELETING: ERROR_DELETING, EXTENDING: ERROR_EXTENDING}

# --- attachments --------------------------------------------------------------------------
ATTACHMENT_RESERVED = "reserved"
ATTACHMENT_ATTACHING = "attaching"
ATTACHMENT_ATTACHED = "attached"
ATTACHMENT_DETACHING = "detaching"
ATTACHMENT_ERROR_ATTACHING = "error_attaching"
ATTACHMENT_ERROR_DETACHING = "error_detaching"

# --- snapshots ----------------------------------------------------------------------------
SNAPSHOT_TRANSIENT = (CREATING, DELETING)
SNAPSHOT_DELETABLE = (AVAILABLE, ERROR, ERROR_DELETING)


def swap(session: Any, model: Any, row_id: str, expected: tuple[str, ...] | str, status: str,
         **values: Any) -> bool:
    """Move row ``row_id`` of ``model`` to ``status`` (and ``values``) if its status is one of
    ``expected``; True when this call made the change. The status clock restarts."""
    expected = (expected,) if isinstance(expected, str) else tuple(expected)
    changes = {"status": status, "updated_at": utcnow(), **values}
    if hasattr(model, "status_changed_at"):
        changes["status_changed_at"] = utcnow()
    result = session.execute(sa.update(model).where(model.id == row_id, model.status.in_(expected))
                             .values(**changes).execution_options(synchronize_session=False))
    return result.rowcount == 1


def settle(session: Any, volume_id: str, expected: tuple[str, ...] | str, **values: Any) -> str | None:
    """Move volume ``volume_id`` from ``expected`` to where it rests:
    in-use while it has an attachment, else available (Cinder's status based on attachment).
    Returns the status set, or None when the volume was not in ``expected``."""
    attached = session.scalar(sa.select(sa.func.count()).select_from(VolumeAttachment)
                              .where(VolumeAttachment.volume_id == volume_id))
    target = IN_USE if attached else AVAILABLE
    return target if swap(session, Volume, volume_id, expected, target, **values) else None
