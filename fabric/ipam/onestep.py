"""PostgreSQL: allocation and release, each as one autocommitted statement.

The same steps as the allocator's portable path (take the lowest free
ordinal below the mark, else raise the mark and free the spare ordinals,
insert the allocation), written as one data-modifying CTE so that one
allocation costs one round trip and one commit. The address text is
computed by PostgreSQL (``host(inet + n)``), which prints addresses exactly
as Python's ``ipaddress`` does except inside ``::/96`` and
``::ffff:0:0/96`` (there it prints an embedded IPv4 form): pools touching
those, or with very many ranges, use the portable path instead.

A unique violation fails the whole statement, so nothing is taken unless
the allocation row was written.

The allocations (one, or a batch) and the single releases (by token,
address or port) run as server-side prepared statements (:func:`run`):
PostgreSQL parses and plans each once per connection and then only executes
it. Planning was most of their server time (measured on 2 CPUs, one
connection: 1,100 allocations/s planned each time, 2,000/s prepared; a batch
of 2 cost PostgreSQL 1.1 ms of CPU planned each time, 0.46 ms prepared, a
batch of 16 1.3 and 1.0 ms). They read only small tables by key (the pool
row, its free ordinals) and write ``address_allocations``, whose unique
checks use its indexes whatever the plan: a plan PostgreSQL kept from tiny
tables (scans instead of index lookups) costs little, and its next ANALYZE
of them makes it plan again. The release of many tokens looks each up in
``address_allocations`` and is planned each time (a generic plan made while
it was small scanned it whole once it had grown: 2.5 ms a batch at 1,600
rows, 35 ms at 12,800, measured on the batch allocation when it looked its
tokens up too).
"""

from __future__ import annotations

import functools
import ipaddress
import sys
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect

from fabric.db.retry import is_connection_error
from fabric.ipam.pools import PoolDefinition

#: psycopg's ``prepare_threshold`` for the hot connections: never prepare because a
#: statement ran often (the batch statements must be planned each time), only when
#: :func:`run` asks. (``None`` would refuse even that.)
PREPARE_ONLY_WHEN_ASKED = sys.maxsize

_DIALECT = psycopg_dialect.dialect()

#: Beyond this many ranges the CASE gets long; such pools take the portable path.
MAX_RANGES = 64

_V6_SPECIAL = (ipaddress.ip_network("::/96"), ipaddress.ip_network("::ffff:0:0/96"))

#: Take the pool's lowest free ordinal below its mark (``taken``), or, when none
#: is free, raise the mark by :chunk (``raised``) and record the rest of the new
#: ordinals as free (``spare``). Shared by the one-statement allocation below and
#: the allocator's two-step path.
_TAKE_OR_RAISE = """
WITH pool AS (SELECT next_ordinal FROM address_pools WHERE id = :pool),
cand AS (SELECT f.ordinal AS o FROM free_addresses f
         WHERE f.pool_id = :pool AND f.ordinal < (SELECT next_ordinal FROM pool)
         ORDER BY f.ordinal LIMIT 1 FOR UPDATE OF f SKIP LOCKED),
taken AS (DELETE FROM free_addresses
          WHERE pool_id = :pool AND ordinal = (SELECT o FROM cand) RETURNING ordinal),
raised AS (UPDATE address_pools SET next_ordinal = next_ordinal + :chunk
           WHERE id = :pool AND next_ordinal + :chunk <= :limit AND NOT EXISTS (SELECT 1 FROM cand)
           RETURNING next_ordinal - :chunk AS first, next_ordinal AS upto),
spare AS (INSERT INTO free_addresses (pool_id, ordinal)
          SELECT :pool, g FROM raised, generate_series(raised.first + 1, raised.upto - 1) AS g
          ON CONFLICT DO NOTHING)"""

#: The allocator's two-step path, first step: the take alone, saying whether the
#: pool exists, the free ordinal it aimed at, the one it took, the raise's first.
TAKE = sa.text(_TAKE_OR_RAISE + """
SELECT EXISTS (SELECT 1 FROM pool), (SELECT o FROM cand), (SELECT ordinal FROM taken),
       (SELECT first FROM raised)
""")

# One allocation: the take's ordinal inserted for the token. Returns whether the
# pool exists, the free ordinal the take aimed at, and the new allocation's
# address and ordinal (NULL when the take raced or the pool is nearly full: the
# portable path decides). A token that already holds an address (a retried
# request) fails the insert on (pool_id, request_token), and the allocator
# answers with what it holds. It is not looked up here: this statement is
# prepared, and a plan PostgreSQL made while address_allocations was small
# (measured: after an ANALYZE of a few rows) reads the whole table for such a
# lookup until statistics are gathered again; the insert's check always uses
# the unique index.
_ALLOCATE = _TAKE_OR_RAISE + """,
chosen AS (SELECT coalesce((SELECT ordinal FROM taken), (SELECT first FROM raised)) AS o),
ins AS (INSERT INTO address_allocations (pool_id, address, ordinal, request_token, port_id, created_at)
        SELECT :pool, host({address}), c.o, :token, :port, :now FROM chosen c WHERE c.o IS NOT NULL
        RETURNING address, ordinal)
SELECT EXISTS (SELECT 1 FROM pool) AS pool_exists, (SELECT o FROM cand) AS candidate,
       (SELECT address FROM ins) AS address, (SELECT ordinal FROM ins) AS ordinal
"""

# The batch form: allocate for many request tokens at once (the caller passes
# each token once). They take the lowest free ordinals below the mark, then new
# ordinals from one raise of the mark (by :chunk, or what is left of the pool,
# or as many as needed if more; what is left over becomes free rows). When even
# that does not fit (the pool is full, or another worker raised the mark
# meanwhile) those requests get no row: the caller sends them down the single
# path, as it does when the statement fails. A token that already holds an
# address fails the insert, as in the single statement (the allocator then
# answers it with what it holds and runs the batch again for the rest): looking
# tokens up here would read address_allocations under a plan kept from when it
# was small (see the module's docstring), and it is prepared like the single
# one. The free rows taken are deleted by key (``= ANY(ARRAY(...))``): written
# as ``IN (SELECT ...)`` PostgreSQL hash-joined the pool's free rows, reading
# every one of them for each batch (measured: 2 ms a batch at 27,500 free rows).
_ALLOCATE_MANY = """
WITH fresh AS (SELECT r.token, r.port, r.k
               FROM unnest(CAST(:tokens AS text[]), CAST(:ports AS text[])) WITH ORDINALITY AS r(token, port, k)),
pool AS (SELECT next_ordinal FROM address_pools WHERE id = :pool),
cand AS (SELECT f.ordinal AS o FROM free_addresses f
         WHERE f.pool_id = :pool AND f.ordinal < (SELECT next_ordinal FROM pool)
         ORDER BY f.ordinal LIMIT (SELECT count(*) FROM fresh) FOR UPDATE OF f SKIP LOCKED),
taken AS (DELETE FROM free_addresses
          WHERE pool_id = :pool AND ordinal = ANY(ARRAY(SELECT o FROM cand)) RETURNING ordinal),
need AS (SELECT k, greatest(k, least(:chunk, :limit - (SELECT next_ordinal FROM pool))) AS step
         FROM (SELECT (SELECT count(*) FROM fresh) - (SELECT count(*) FROM taken) AS k) x),
raised AS (UPDATE address_pools SET next_ordinal = next_ordinal + (SELECT step FROM need)
           WHERE id = :pool AND (SELECT k FROM need) > 0
             AND next_ordinal + (SELECT step FROM need) <= :limit
           RETURNING next_ordinal - (SELECT step FROM need) AS first, next_ordinal AS upto),
chosen AS (SELECT o, row_number() OVER (ORDER BY o) AS k
           FROM (SELECT ordinal AS o FROM taken
                 UNION ALL SELECT g FROM raised, generate_series(raised.first, raised.upto - 1) AS g) u),
spare AS (INSERT INTO free_addresses (pool_id, ordinal)
          SELECT :pool, o FROM chosen WHERE k > (SELECT count(*) FROM fresh)
          ON CONFLICT DO NOTHING),
ins AS (INSERT INTO address_allocations (pool_id, address, ordinal, request_token, port_id, created_at)
        SELECT :pool, host({address}), c.o, f.token, f.port, :now FROM fresh f JOIN chosen c ON c.k = f.k
        RETURNING request_token, address, ordinal, port_id)
SELECT request_token, address, ordinal, port_id FROM ins
"""

RELEASE = sa.text("""
WITH gone AS (DELETE FROM address_allocations WHERE {where}
              RETURNING pool_id, address, ordinal, request_token, port_id),
freed AS (INSERT INTO free_addresses (pool_id, ordinal)
          SELECT pool_id, ordinal FROM gone WHERE ordinal IS NOT NULL ON CONFLICT DO NOTHING)
SELECT pool_id, address, ordinal, request_token, port_id FROM gone
""")


@functools.cache
def release_statement(by: str) -> sa.TextClause:
    """Release by ``token`` (:pool, :token), ``address`` (:pool, :address), ``port`` (:port)
    or ``tokens`` (:pool, :tokens, a list)."""
    where = {
        "token": "pool_id = :pool AND request_token = :token",
        "address": "pool_id = :pool AND address = :address",
        "port": "port_id = :port",
        # By id, each looked up by (pool, token): never a scan of the whole pool.
        "tokens": ("id = ANY(ARRAY(SELECT (SELECT a.id FROM address_allocations a "
                   "WHERE a.pool_id = :pool AND a.request_token = t.token) "
                   "FROM unnest(CAST(:tokens AS text[])) AS t(token)))"),
    }[by]
    return sa.text(RELEASE.text.format(where=where))


@functools.cache
def release_sql(by: str) -> str:
    """:func:`release_statement` as driver SQL, for :func:`run`."""
    return driver_sql(release_statement(by))


def allocate_statement(definition: PoolDefinition, many: bool = False) -> sa.TextClause | None:
    """The one-statement allocation for this pool, or None when it must take the portable path.

    ``many``: the batch form (:tokens and :ports lists; a row per answered token).
    """
    if len(definition.ranges) > MAX_RANGES:
        return None
    version = definition.version
    if version == 6:
        for first, last in definition.ranges:
            span = (ipaddress.IPv6Address(first), ipaddress.IPv6Address(last))
            if any(span[0] <= net.broadcast_address and net.network_address <= span[1] for net in _V6_SPECIAL):
                return None
    cases = []
    start = 0
    for first, last in definition.ranges:
        end = start + (last - first + 1)
        # Addresses come from ipaddress, so inlining them as literals is safe.
        base = ipaddress.IPv4Address(first) if version == 4 else ipaddress.IPv6Address(first)
        cases.append(f"WHEN c.o < {end} THEN inet '{base}' + (c.o - {start})")
        start = end
    address = "CASE " + " ".join(cases) + " END"
    return sa.text((_ALLOCATE_MANY if many else _ALLOCATE).format(address=address))


def driver_sql(statement: sa.TextClause) -> str:
    """``statement`` in psycopg's own parameter style (``%(name)s``), for :func:`run`."""
    return str(statement.compile(dialect=_DIALECT))


def run(connection: Any, sql: str, params: dict[str, Any], prepare: bool) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` (see :func:`driver_sql`) run on ``connection``, a pooled psycopg
    connection (``engine.raw_connection()``) in autocommit mode: as a prepared statement if
    ``prepare``, else planned afresh. Straight to the driver: SQLAlchemy's execution added
    about 180 µs of CPU to each batch (measured, 10 allocations a batch).

    Errors are raised as SQLAlchemy's (IntegrityError, OperationalError ...), as
    ``Connection.execute`` raises them; a connection the error shows to be lost is
    invalidated, so the pool never hands it out again.
    """
    try:
        return connection.driver_connection.execute(sql, params, prepare=prepare).fetchall()
    except psycopg.Error as exc:
        lost = is_connection_error(exc)
        if lost:
            connection.invalidate(exc)
        raise sa.exc.DBAPIError.instance(sql, params, exc, psycopg.Error, connection_invalidated=lost) from exc
