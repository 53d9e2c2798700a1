"""Faults: why an instance failed, recorded on the instance (the last one is shown)."""

from __future__ import annotations

import traceback

from fabric.db import Database
from fabric.db.models import InstanceFault
from fabric.db.types import utcnow
from fabric.exception import FabricError

_MESSAGE_MAX = 255


def record_fault(db: Database, instance_id: str, error: BaseException | str, host: str | None,
                 code: int | None = None) -> None:
    """Add a fault row: message, code (the error's, 500 for a non-fabric error), time, details."""
    if isinstance(error, FabricError):
        message, fault_code = error.message, error.code
    elif isinstance(error, BaseException):
        message, fault_code = f"{type(error).__name__}: {error}", 500
    else:
        message, fault_code = str(error), 500
    details = ""
    if isinstance(error, BaseException) and error.__traceback__ is not None:
        details = "".join(traceback.format_exception(type(error), error, error.__traceback__))[-8000:]
    with db.begin() as session:
        session.add(InstanceFault(instance_id=instance_id, code=code or fault_code,
                                  message=message[:_MESSAGE_MAX], details=details, host=host,
                                  created_at=utcnow()))


def latest_fault(db: Database, instance_id: str) -> dict | None:
    """The instance's most recent fault as a dict, or None."""
    import sqlalchemy as sa

    with db.begin() as session:
        row = session.scalars(sa.select(InstanceFault).where(InstanceFault.instance_id == instance_id)
                              .order_by(InstanceFault.id.desc()).limit(1)).first()
        if row is None:
            return None
        return {"code": row.code, "message": row.message, "details": row.details, "host": row.host,
                "created_at": row.created_at}
