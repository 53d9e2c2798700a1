"""The cast outbox: casts written in the transaction of the state change they follow."""

from __future__ import annotations

import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from fabric.db.models.base import Base
from fabric.db.types import Json, Timestamp


class OutboxCast(Base):
    """One cast committed with its state change and not yet confirmed by the broker
    (:mod:`fabric.rpc.outbox`). Deleted once confirmed.

    ``id`` orders the casts (per ``key``, the relay keeps that order); ``writer`` is the
    relay that sends it now and ``lease_until`` how long that relay holds it: a row whose
    lease ran out lost its writer, and another relay of the same ``kind`` takes it over.
    """

    __tablename__ = "outbox"
    __table_args__ = (sa.Index("ix_outbox_kind_lease_until", "kind", "lease_until"),)

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                                    autoincrement=True)
    #: The kind of worker that writes and sends it ("api", "scheduler", "compute").
    kind: Mapped[str] = mapped_column(sa.String(32))
    writer: Mapped[str] = mapped_column(sa.String(96), index=True)
    #: Which cast of :data:`fabric.rpc.outbox.CASTS` it is (its sender and method).
    cast: Mapped[str] = mapped_column(sa.String(64))
    #: Casts with the same key are sent in ``id`` order (the instance id).
    key: Mapped[str] = mapped_column(sa.String(64))
    #: The request context and the keyword arguments, as JSON.
    payload: Mapped[dict] = mapped_column(Json)
    created_at: Mapped[datetime.datetime] = mapped_column(Timestamp)
    lease_until: Mapped[datetime.datetime] = mapped_column(Timestamp)
