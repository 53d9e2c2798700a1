"""Faults: why an instance failed, recorded on the instance (the last one is shown).

The one way to write a fault: :func:`add_fault` inside a transaction the
caller holds (to commit it with the state change that it explains), or
:func:`record_fault` in a transaction of its own.
"""

from __future__ import annotations

import traceback

import sqlalchemy as sa
from sqlalchemy import orm

from fabric.db import Database
from fabric.db.models import InstanceFault
from fabric.db.types import utcnow
from fabric.exception import FabricError

_MESSAGE_MAX = 255
_DETAILS_MAX = 8000


def add_fault(session: orm.Session, instance_id: str, error: BaseException | str, host: str | None,
              *, code: int | None = None, details: str | None = None) -> None:
    """Add a fault row in ``session``: message, code (``code``, else the error's, 500 for a
    non-fabric error), time, and details (``details``, else the error's traceback)."""
    if isinstance(error, FabricError):
        message, fault_code = error.message, error.code
    elif isinstance(error, BaseException):
        message, fault_code = f"{type(error).__name__}: {error}", 500
    else:
        message, fault_code = str(error), 500
    if details is None:
        details = ""
        if isinstance(error, BaseException) and error.__traceback__ is not None:
            details = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    session.add(InstanceFault(instance_id=instance_id, code=code or fault_code, message=message[:_MESSAGE_MAX],
                              details=details[-_DETAILS_MAX:], host=host, created_at=utcnow()))


def record_fault(db: Database, instance_id: str, error: BaseException | str, host: str | None,
                 code: int | None = None) -> None:
    """:func:`add_fault` in a transaction of its own."""
    with db.begin() as session:
        add_fault(session, instance_id, error, host, code=code)


def latest_fault(db: Database, instance_id: str) -> dict | None:
    """The instance's most recent fault as a dict, or None."""
    with db.begin() as session:
        row = session.scalars(sa.select(InstanceFault).where(InstanceFault.instance_id == instance_id)
                              .order_by(InstanceFault.id.desc()).limit(1)).first()
        if row is None:
            return None
        return {"code": row.code, "message": row.message, "details": row.details, "host": row.host,
                "created_at": row.created_at}
