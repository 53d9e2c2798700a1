"""The allocator's steps as separate statements inside the caller's transaction.

The portable path (MariaDB and SQLite, and PostgreSQL's fallback near the end
of a pool or after a stale hint) and the portable batch are made of these:
take the lowest free ordinal below the pool's mark, or raise the mark and
record the spare ordinals as free. Each takes the connection of the caller's
transaction and the backend's name (``postgresql``, ``mysql`` or ``sqlite``);
whoever commits decides, and the allocation's unique constraints stay the
judge of who won.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from fabric.db.models import AddressPool, FreeAddress
from fabric.exception import NotFound
from fabric.ipam import onestep

POOLS = AddressPool.__table__
FREE = FreeAddress.__table__

#: Why a take found nothing: the free row it aimed at went to another worker.
RACED = "raced"


def free_below_mark(pool_id: str, count: int) -> sa.Select[Any]:
    """The ``count`` lowest free ordinals of the pool below its high-water mark."""
    mark = sa.select(POOLS.c.next_ordinal).where(POOLS.c.id == pool_id).scalar_subquery()
    return (sa.select(FREE.c.ordinal).where(FREE.c.pool_id == pool_id, FREE.c.ordinal < mark)
            .order_by(FREE.c.ordinal).limit(count))


def take_lowest_free(conn: sa.Connection, backend: str, pool_id: str, count: int) -> list[int] | None:
    """Take up to ``count`` of the pool's lowest free ordinals below its mark, lowest first
    (fewer, or none, when fewer are free); None when another worker won some of them.

    A SELECT (skipping the rows other workers are taking at that moment: a speed-up only),
    then a DELETE of those rows by key whose row count decides. (On MariaDB one
    ``DELETE ... WHERE ordinal IN (SELECT ... SKIP LOCKED) RETURNING`` would save a round
    trip, but its DELETE reads the pool's free rows in turn and waits on those another
    worker holds.)
    """
    lowest = free_below_mark(pool_id, count)
    if backend in ("mysql", "postgresql"):
        lowest = lowest.with_for_update(skip_locked=True)
    ordinals = list(conn.execute(lowest).scalars())
    if ordinals:
        won = conn.execute(FREE.delete().where(FREE.c.pool_id == pool_id, FREE.c.ordinal.in_(ordinals))).rowcount
        if won != len(ordinals):
            return None
    return ordinals


def take(conn: sa.Connection, backend: str, pool_id: str, limit: int,
         chunk: int) -> tuple[int | None, str | None]:
    """Take the lowest free ordinal, else raise the mark by ``chunk``: (ordinal, "free" |
    "mark"), or (None, RACED) when another worker won the free row, (None, None) when the
    pool is full. Raises NotFound for an unknown pool."""
    if backend == "postgresql":
        exists, candidate, taken, raised = conn.execute(
            onestep.TAKE, {"pool": pool_id, "limit": limit, "chunk": chunk}).one()
        if not exists:
            raise NotFound(kind="address pool", ident=pool_id)
        if taken is not None:
            return taken, "free"
        if candidate is not None:
            return None, RACED
        if raised is not None:
            return raised, "mark"
        return raise_mark(conn, backend, pool_id, limit, 1)

    lowest = free_below_mark(pool_id, 1)
    if backend == "mysql":
        # A hint only: the DELETE's row count below decides who won.
        lowest = lowest.with_for_update(skip_locked=True)
    candidate = conn.execute(lowest).scalar()
    if candidate is not None:
        won = conn.execute(FREE.delete().where(FREE.c.pool_id == pool_id,
                                               FREE.c.ordinal == candidate)).rowcount
        return (candidate, "free") if won else (None, RACED)
    return raise_mark(conn, backend, pool_id, limit, chunk)


def raise_mark(conn: sa.Connection, backend: str, pool_id: str, limit: int,
               chunk: int) -> tuple[int | None, str | None]:
    """Raise the pool's mark by ``chunk`` (by 1 near the end): the first new ordinal is
    ours, the others become free rows. (None, None) when the pool is exhausted."""
    for step in dict.fromkeys((chunk, 1)):
        upto = bump_mark(conn, backend, pool_id, limit, step)
        if upto is None:
            if not conn.execute(sa.select(POOLS.c.id).where(POOLS.c.id == pool_id)).first():
                raise NotFound(kind="address pool", ident=pool_id)
            continue
        first = upto - step
        add_free(conn, backend, pool_id, range(first + 1, upto))
        return first, "mark"
    return None, None


def mark_step(need: int, mark: int, limit: int, extend_by: int) -> int:
    """How far a batch short of ``need`` free rows raises a mark now at ``mark``: ``extend_by``
    (the rest become free rows for the batches after it), less near ``limit``, never less than
    ``need`` (a raise that would pass ``limit`` is refused by :func:`bump_mark`)."""
    return max(need, min(extend_by, limit - mark))


def bump_mark(conn: sa.Connection, backend: str, pool_id: str, limit: int, step: int) -> int | None:
    """Raise the pool's mark by ``step`` if it stays within ``limit``: the new mark, or None."""
    if backend == "mysql":
        # LAST_INSERT_ID(expr) hands the new value back to this connection
        # alone: an atomic fetch-and-add in one statement.
        result = conn.execute(sa.text(
            "UPDATE address_pools SET next_ordinal = LAST_INSERT_ID(next_ordinal + :step) "
            "WHERE id = :pool AND next_ordinal + :step <= :limit"),
            {"pool": pool_id, "limit": limit, "step": step})
        return result.lastrowid if result.rowcount else None
    return conn.execute(
        POOLS.update().where(POOLS.c.id == pool_id, POOLS.c.next_ordinal + step <= limit)
        .values(next_ordinal=POOLS.c.next_ordinal + step)
        .returning(POOLS.c.next_ordinal)).scalar()


def add_free(conn: sa.Connection, backend: str, pool_id: str, ordinals: range) -> None:
    """Record ``ordinals`` of the pool as free (those already recorded are skipped)."""
    if ordinals:
        conn.execute(insert_ignoring_duplicates(backend, FREE),
                     [{"pool_id": pool_id, "ordinal": o} for o in ordinals])


def insert_ignoring_duplicates(backend: str, table: sa.Table) -> Any:
    """An INSERT of ``table`` that skips rows violating a unique constraint."""
    if backend == "mysql":
        return mysql.insert(table).prefix_with("IGNORE")
    dialect = postgresql if backend == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()
