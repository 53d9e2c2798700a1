"""MariaDB: the batch allocation on the driver (PyMySQL) directly.

The same steps, statements and constraints as the portable batch
(:func:`fabric.ipam.steps.take_lowest_free`, :func:`~fabric.ipam.steps.bump_mark`,
:func:`~fabric.ipam.steps.add_free`, one multi-row insert), in one READ
COMMITTED transaction on one of the allocator's hot connections, written as
driver SQL: through SQLAlchemy's Core each batch cost about 1.5 ms of the
worker's CPU (building, caching and executing four statements and reading
their results), more than the round trips themselves. A lone caller is a
batch of one, and with several workers the batches are small, so that cost
was paid nearly per allocation. The last statements and the COMMIT go in one
round trip (a lone caller's allocation was four round trips, a raw INSERT's
one).

Errors are raised as SQLAlchemy's (IntegrityError, OperationalError ...), as
``Connection.execute`` raises them, after a rollback (the hot connections are
not rolled back when returned to their pool); a connection the error shows to
be lost is invalidated.
"""

from __future__ import annotations

from typing import Any

import pymysql
import sqlalchemy as sa

from fabric.db.retry import is_connection_error
from fabric.db.types import utcnow
from fabric.ipam import steps
from fabric.ipam.pools import PoolDefinition

# The lowest free ordinals below the mark, skipping rows other workers are taking
# (a speed-up only: the DELETE's row count decides).
_LOWEST_FREE = ("SELECT ordinal FROM free_addresses WHERE pool_id = %s AND ordinal < "
                "(SELECT next_ordinal FROM address_pools WHERE id = %s) "
                "ORDER BY ordinal LIMIT %s FOR UPDATE SKIP LOCKED")
_TAKE = "DELETE FROM free_addresses WHERE pool_id = %s AND ordinal IN ({})"
_MARK = "SELECT next_ordinal FROM address_pools WHERE id = %s"
# LAST_INSERT_ID(expr) hands the new mark back to this connection alone.
_BUMP = ("UPDATE address_pools SET next_ordinal = LAST_INSERT_ID(next_ordinal + %s) "
         "WHERE id = %s AND next_ordinal + %s <= %s")
_ADD_FREE = "INSERT IGNORE INTO free_addresses (pool_id, ordinal) VALUES {}"
_INSERT = ("INSERT INTO address_allocations (pool_id, address, ordinal, request_token, port_id, created_at) "
           "VALUES {}")


def allocate_batch(connection: Any, pool_id: str, definition: PoolDefinition,
                   requests: list[tuple[str, str | None]], extend_by: int) -> list[dict[str, Any]]:
    """Allocate for ``requests`` ((token, port), each token once) in one transaction on
    ``connection`` (a pooled PyMySQL connection, ``engine.raw_connection()``): the rows
    inserted (pool_id, address, ordinal, request_token, port_id), as many as there was
    room for, first requests first. Raises SQLAlchemy's errors.

    Three round trips for a batch the free rows cover (the SELECT; the DELETE, INSERT
    and COMMIT together, as one multi-statement query: the hot connections allow them),
    two more when it raises the mark."""
    driver = connection.driver_connection
    sql = _LOWEST_FREE
    try:
        with driver.cursor() as cursor:
            cursor.execute(sql, (pool_id, pool_id, len(requests)))
            ordinals = [row[0] for row in cursor.fetchall()]
            taken = len(ordinals)
            need = len(requests) - taken
            if need:
                sql = _MARK
                cursor.execute(sql, (pool_id,))
                row = cursor.fetchone()
                mark = row[0] if row is not None else 0  # a pool gone: the raise below finds no row
                step = steps.mark_step(need, mark, definition.limit, extend_by)
                sql = _BUMP
                if cursor.execute(sql, (step, pool_id, step, definition.limit)):
                    first = cursor.lastrowid - step
                    ordinals.extend(range(first, first + need))
                    spare = range(first + need, first + step)
                    if spare:
                        sql = _ADD_FREE.format(", ".join(["(%s, %s)"] * len(spare)))
                        cursor.execute(sql, [v for o in spare for v in (pool_id, o)])
            rows = [(pool_id, definition.address(o), o, token, port)
                    for (token, port), o in zip(requests, ordinals, strict=False)]
            # The free rows' delete, the insert and the COMMIT in one round trip. The
            # rows were locked by the SELECT above, so the delete takes them all; were
            # one gone (another node of a cluster, where locks do not reach), the
            # allocation's unique constraints, as ever, refuse the insert or the commit.
            statements, values = [], []
            if taken:
                statements.append(_TAKE.format(", ".join(["%s"] * taken)))
                values += [pool_id, *ordinals[:taken]]
            if rows:
                now = utcnow()
                statements.append(_INSERT.format(", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(rows))))
                values += [v for row in rows for v in (*row, now)]
            sql = "; ".join([*statements, "COMMIT"])
            cursor.execute(sql, values)
            while cursor.nextset():
                pass
    except pymysql.Error as exc:
        lost = is_connection_error(exc)
        if lost:
            connection.invalidate(exc)
        else:
            driver.rollback()
        raise sa.exc.DBAPIError.instance(sql, None, exc, pymysql.Error, connection_invalidated=lost) from exc
    except BaseException:
        driver.rollback()  # the pool hands connections out again as they are returned
        raise
    return [dict(zip(("pool_id", "address", "ordinal", "request_token", "port_id"), row, strict=True))
            for row in rows]
