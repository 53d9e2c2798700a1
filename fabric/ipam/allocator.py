"""Address allocation in the database, correct with any number of ipam workers.

Correctness rests on unique constraints, never on row locks: an allocation
row is unique per (pool, address), (pool, ordinal) and (pool, request
token). Speed and "lowest free first" rest on two hints kept beside them:

* the pool row's ``next_ordinal`` (high-water mark): every ordinal below it
  has been handed out at least once;
* ``free_addresses``: ordinals released again (below the mark, or not yet).

Allocation takes the smallest free ordinal below the mark (a DELETE whose
row count or RETURNING says whether this worker won it), else raises the
mark (an atomic UPDATE), and inserts the allocation in the same short
transaction. If the insert violates a constraint the transaction rolls back
and the allocator looks why: the request token is already held (a retried
request: answer with what it holds), or the ordinal was taken by an
explicit request (the hint is stale: drop it and try again). Release deletes
the allocation and records its ordinal as free in one transaction, so the
address is available again at once.

The mark is raised 32 ordinals at a time: the first is allocated, the other
31 become free rows, so concurrent allocations take distinct free rows
(skipping rows another worker is taking at that moment: a speed-up only,
the DELETE's result still decides) instead of queueing on the pool row.
On PostgreSQL a whole allocation is one autocommitted statement (a
data-modifying CTE, :mod:`fabric.ipam.onestep`; the single-request ones
prepared, so PostgreSQL plans them once per connection), run straight on
the driver; on MariaDB and SQLite the take is a SELECT then a DELETE, or an
increment (:mod:`fabric.ipam.steps`).

Group commit: a commit (a log flush) costs more than the statements, so
concurrent allocations in one pool, and concurrent releases by token, are
combined (fabric.ipam.batching) into one transaction per batch: the lowest
free ordinals for all of them, one raise of the mark for the rest, one
multi-row insert. The same constraints decide; a batch that violates one
rolls back as a whole: the tokens it finds already held (retried requests)
are answered with what they hold and the rest run again once, and otherwise
each of its requests takes the single path. On PostgreSQL the batch is one
prepared statement as well, and a batch of one (a lone caller) is the single
statement itself.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from pymysql.constants import CLIENT

from fabric.db import Database
from fabric.db.models import AddressAllocation, AddressPool, FreeAddress, Port
from fabric.db.retry import is_connection_error
from fabric.db.types import utcnow
from fabric.exception import (
    AddressExhausted,
    AddressInUse,
    Conflict,
    NotFound,
    RequestTokenConflict,
)
from fabric.ipam import mariadb, onestep, steps
from fabric.ipam.batching import FALLBACK, GroupCommit
from fabric.ipam.pools import PoolDefinition

LOG = logging.getLogger(__name__)

POOLS = AddressPool.__table__
FREE = FreeAddress.__table__
ALLOCATIONS = AddressAllocation.__table__
PORTS = Port.__table__

_COLUMNS = (ALLOCATIONS.c.pool_id, ALLOCATIONS.c.address, ALLOCATIONS.c.ordinal,
            ALLOCATIONS.c.request_token, ALLOCATIONS.c.port_id)

#: How many ordinals one raise of the high-water mark claims. The first goes to
#: the allocation that raised it, the rest into free_addresses, so concurrent
#: allocations take distinct free rows instead of queueing on the pool row.
EXTEND_BY = 32

#: How far a batch raises the mark (at least as far as it needs; no further than the
#: pool's end). Larger than EXTEND_BY: with several workers every raise queues the
#: others' raises on the pool row until it commits, so batches raise it rarely.
BATCH_EXTEND_BY = 256


class _BatchRaced(Exception):
    """A batch lost some free rows to another worker: it rolls back, its requests go one by one."""


def _allocation(pool_id: str, address: str, ordinal: int | None, request_token: str,
                port_id: str | None) -> dict[str, Any]:
    """An allocation as the allocator's callers receive it."""
    return {"pool": pool_id, "address": address, "ordinal": ordinal,
            "request_token": request_token, "port_id": port_id}


def _as_dict(row: Any) -> dict[str, Any]:
    return _allocation(row.pool_id, row.address, row.ordinal, row.request_token, row.port_id)


class Allocator:
    """Allocates and releases addresses of pools stored in ``db``.

    Definitions are cached per process. A pool's ranges never change once stored; a subnet
    pool's gateway (its excluded address and reported info) may, when the subnet's gateway
    moves (:mod:`fabric.ipam.gateways`): :meth:`forget` drops the copy then, and an address
    asked for by name is checked against the stored definition, never the cache.
    """

    def __init__(self, db: Database, max_retries: int = 20, batch_size: int = 64) -> None:
        """``batch_size``: most requests combined into one transaction (1: no batching)."""
        self.db = db
        self.max_retries = max_retries
        self._definitions: dict[str, PoolDefinition] = {}
        #: (pool id, batch?) -> its one-statement allocation as driver SQL (None: portable path).
        self._onestep: dict[tuple[str, bool], str | None] = {}
        self._allocations = GroupCommit(self.allocate_many, batch_size) if batch_size > 1 else None
        self._releases = GroupCommit(self.release_many, batch_size) if batch_size > 1 else None
        backend = db.backend
        # At most as many connections in use as the pool keeps open: beyond that
        # SQLAlchemy opens overflow connections and closes them again on return,
        # and under a burst of concurrent handlers that connect/close churn
        # costs more than the allocations themselves. Green under eventlet.
        size = db.engine.pool.size() if hasattr(db.engine.pool, "size") else 5
        self._gate = threading.BoundedSemaphore(max(1, size))
        # The hot paths (allocate, release) get connections of their own without
        # the shared pool's pre-ping: on a busy server that extra round trip
        # cost as much as the allocation. A connection found dead fails its
        # statement with OperationalError, and those paths retry.
        self._hot = db.engine
        if backend in ("postgresql", "mysql"):
            isolation = "AUTOCOMMIT" if backend == "postgresql" else "READ COMMITTED"
            connect_args: dict[str, Any] = {"connect_timeout": 10}
            if backend == "mysql":
                # FOUND_ROWS as SQLAlchemy sets it (these replace its flags); several
                # statements in one query for fabric.ipam.mariadb's last round trip
                # (every value in them is escaped by the driver, as in any query).
                connect_args["client_flag"] = CLIENT.FOUND_ROWS | CLIENT.MULTI_STATEMENTS
            if backend == "postgresql":
                # Prepared only where onestep asks: after five runs psycopg would
                # prepare any statement, and PostgreSQL may then keep a generic plan of
                # a batch statement made while the tables were nearly empty, which slows
                # down as they grow (measured: 2.5 ms per 16-allocation batch at 1,600
                # rows, 35 ms at 12,800). Planned afresh each time, the cost stays flat.
                connect_args["prepare_threshold"] = onestep.PREPARE_ONLY_WHEN_ASKED
            # Every use of these connections ends in a commit or a rollback (or is
            # autocommitted), so the pool's rollback on return is a wasted round trip.
            self._hot = sa.create_engine(
                db.url, isolation_level=isolation, pool_size=max(1, size), max_overflow=0,
                pool_pre_ping=False, pool_recycle=3600, pool_reset_on_return=None,
                connect_args=connect_args)

    def close(self) -> None:
        """Release the hot paths' connections (the shared Database stays open)."""
        if self._hot is not self.db.engine:
            self._hot.dispose()

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sa.Connection]:
        with self._gate, self.db.engine.connect() as conn:
            yield conn

    @contextlib.contextmanager
    def _begin(self, hot: bool = False) -> Iterator[sa.Connection]:
        """A transaction; ``hot``: on the hot paths' engine when it is transactional (MariaDB)."""
        engine = self._hot if hot and self.db.backend == "mysql" else self.db.engine
        with self._gate, engine.begin() as conn:
            yield conn

    # --- pools ------------------------------------------------------------------

    def ensure_pool(self, definition: PoolDefinition, kind: str, *, subnet_id: str | None = None,
                    segment_id: int | None = None, host_id: int | None = None) -> PoolDefinition:
        """Store the pool if it is new; return the stored definition.

        Idempotent. Raises Conflict when a pool of that id exists with other ranges.
        """
        stored = self.definition(definition.pool_id, missing_ok=True)
        if stored is None:
            insert = steps.insert_ignoring_duplicates(self.db.backend, POOLS).values(
                id=definition.pool_id, kind=kind, subnet_id=subnet_id, segment_id=segment_id,
                host_id=host_id, definition=definition.to_json(), size_limit=definition.limit,
                next_ordinal=0)
            with self._begin() as conn:
                conn.execute(insert)
            stored = self.definition(definition.pool_id)
        if stored.ranges != definition.ranges:
            raise Conflict(reason=(f"pool {definition.pool_id} already exists with ranges "
                                   f"{stored.to_json()['ranges']}, not {definition.to_json()['ranges']}"))
        return stored

    def definition(self, pool_id: str, missing_ok: bool = False, fresh: bool = False) -> PoolDefinition | None:
        """The stored definition of ``pool_id`` (``fresh``: read now, not from the cache); NotFound
        unless ``missing_ok``."""
        cached = None if fresh else self._definitions.get(pool_id)
        if cached is not None:
            return cached
        with self._connect() as conn:
            data = conn.execute(sa.select(POOLS.c.definition).where(POOLS.c.id == pool_id)).scalar()
        if data is None:
            if missing_ok:
                return None
            raise NotFound(kind="address pool", ident=pool_id)
        definition = PoolDefinition.from_json(pool_id, data)
        self._definitions[pool_id] = definition
        return definition

    def forget(self, pool_id: str) -> None:
        """Drop a cached definition (after its pool was deleted or its gateway moved)."""
        self._definitions.pop(pool_id, None)
        self._onestep.pop((pool_id, False), None)
        self._onestep.pop((pool_id, True), None)

    def delete_pool(self, pool_id: str) -> bool:
        """Delete a pool and every allocation in it; True if it existed."""
        with self._begin() as conn:
            deleted = conn.execute(POOLS.delete().where(POOLS.c.id == pool_id)).rowcount
        self.forget(pool_id)
        return bool(deleted)

    def in_use(self, pool_id: str) -> int:
        with self._connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(ALLOCATIONS)
                                .where(ALLOCATIONS.c.pool_id == pool_id)).scalar_one()

    # --- allocation -------------------------------------------------------------

    def allocate(self, pool_id: str, request_token: str, port_id: str | None = None) -> dict[str, Any]:
        """The lowest free address of the pool, held for ``request_token``.

        Idempotent: the same token in the same pool gets the same allocation.
        Raises AddressExhausted (naming the pool, its size and how many are in
        use), NotFound for an unknown pool or port.
        """
        definition = self.definition(pool_id)
        if self._allocations is not None:
            answer = self._allocations.submit(pool_id, (request_token, port_id))
            if answer is not FALLBACK:
                return answer
        statement = self._single_sql(definition)
        # Losing a free row to a concurrent worker is cheap and common; only
        # constraint violations and lock errors count against max_retries.
        failures = races = 0
        while failures < self.max_retries and races < 50 * self.max_retries:
            ordinal, source = None, None
            try:
                if statement is not None:
                    candidate, allocated = self._allocate_onestep(statement, pool_id, request_token,
                                                                  port_id, definition.limit)
                    if allocated is not None:
                        return allocated
                    if candidate is not None:
                        races += 1
                        continue
                    # Near the end of the pool (or a stale hint, below): the portable path decides.
                with self._begin(hot=True) as conn:
                    ordinal, source = steps.take(conn, self.db.backend, pool_id, definition.limit, EXTEND_BY)
                    if ordinal is None:
                        if source == steps.RACED:
                            races += 1
                            continue
                        break
                    address = definition.address(ordinal)
                    conn.execute(ALLOCATIONS.insert().values(
                        pool_id=pool_id, address=address, ordinal=ordinal,
                        request_token=request_token, port_id=port_id))
                return _allocation(pool_id, address, ordinal, request_token, port_id)
            except sa.exc.IntegrityError:
                failures += 1
                held = self.lookup(pool_id, request_token=request_token)
                if held is not None:
                    return held
                self._why_not_inserted(pool_id, port_id)
                if ordinal is None:
                    # The one-statement path hit an ordinal held by an explicit
                    # allocation; the portable path (which knows the ordinal) drops it.
                    statement = None
                self._drop_stale(pool_id, ordinal, source)
                LOG.debug("ordinal %s of pool %s was taken (%s); retrying", ordinal, pool_id, source)
            except sa.exc.OperationalError as exc:
                if is_connection_error(exc):
                    raise  # an outage, not a race: the handler is run again once the database answers
                # Deadlock or lock timeout (MariaDB), serialization or busy (SQLite): retry.
                failures += 1
                LOG.debug("allocation in pool %s retried after %s", pool_id, exc.orig)
                time.sleep(0.001 * failures)
            except NotFound:
                self.forget(pool_id)
                raise
        else:
            raise Conflict(reason=(f"allocation in pool {pool_id} for request {request_token} lost "
                                   f"{self.max_retries} races in a row; try again"))
        held = self.lookup(pool_id, request_token=request_token)
        if held is not None:
            return held
        raise AddressExhausted(pool=pool_id, size=definition.size, in_use=self.in_use(pool_id))

    def _single_sql(self, definition: PoolDefinition) -> str | None:
        """The pool's one-statement allocation, as prepared (driver SQL); None off PostgreSQL."""
        if self.db.backend != "postgresql":
            return None
        key = (definition.pool_id, False)
        if key not in self._onestep:
            statement = onestep.allocate_statement(definition)
            self._onestep[key] = onestep.driver_sql(statement) if statement is not None else None
        return self._onestep[key]

    def _batch_sql(self, definition: PoolDefinition) -> str | None:
        """The pool's one-statement batch allocation (driver SQL); None off PostgreSQL."""
        if self.db.backend != "postgresql":
            return None
        key = (definition.pool_id, True)
        if key not in self._onestep:
            statement = onestep.allocate_statement(definition, many=True)
            self._onestep[key] = onestep.driver_sql(statement) if statement is not None else None
        return self._onestep[key]

    def allocate_many(self, pool_id: str, requests: list[tuple[str, str | None]]) -> list[Any]:
        """Allocate for several (token, port) requests in one transaction (GroupCommit's batch).

        Returns an allocation per request, or FALLBACK for those the batch did
        not answer (a token repeated within the batch, no room for a raise of
        the mark). Any error fails the whole batch (GroupCommit then sends
        every request down the single path).
        """
        definition = self.definition(pool_id)
        first_of: dict[str, int] = {}
        for n, (token, _) in enumerate(requests):
            first_of.setdefault(token, n)
        unique = [requests[n] for n in first_of.values()]
        single = self._single_sql(definition) if len(unique) == 1 else None
        statement = self._batch_sql(definition)
        if single is not None:
            # A batch of one (a lone caller): the single statement, prepared, is the
            # cheaper of the two; a race, a full pool or a held token (IntegrityError)
            # leaves it to the single path.
            (token, port), = unique
            _, allocated = self._allocate_onestep(single, pool_id, token, port, definition.limit)
            answered = {token: allocated} if allocated is not None else {}
        elif statement is not None:
            answered = self._allocate_batch_onestep(statement, pool_id, definition, unique)
        else:
            answered = self._allocate_batch_portable(pool_id, definition, unique)
        return [answered.get(token, FALLBACK) if first_of[token] == n else FALLBACK
                for n, (token, _) in enumerate(requests)]

    def _allocate_batch_onestep(self, sql: str, pool_id: str, definition: PoolDefinition,
                                requests: list[tuple[str, str | None]]) -> dict[str, dict[str, Any]]:
        """PostgreSQL: the batch as one prepared statement (see onestep)."""
        def run(requests: list[tuple[str, str | None]]) -> dict[str, dict[str, Any]]:
            rows = self._run(sql, {
                "pool": pool_id, "tokens": [t for t, _ in requests], "ports": [p for _, p in requests],
                "limit": definition.limit, "chunk": BATCH_EXTEND_BY, "now": utcnow()})
            return {token: _allocation(pool_id, address, ordinal, token, port)
                    for token, address, ordinal, port in rows}

        return self._batch_answering_held(run, pool_id, requests)

    def _batch_answering_held(self, run: Any, pool_id: str,
                              requests: list[tuple[str, str | None]]) -> dict[str, dict[str, Any]]:
        """``run(requests)``, a batch that does not look its tokens up first (a lookup per
        batch costs a round trip, or on PostgreSQL a plan that may scan): when its insert
        fails, the tokens already held (retried requests) are answered with what they hold
        and the rest run once more. A failure with no token held (a stale free row) fails
        the batch."""
        try:
            return run(requests)
        except sa.exc.IntegrityError:
            held = self._held(pool_id, [token for token, _ in requests])
            if not held:
                raise
        fresh = [(token, port) for token, port in requests if token not in held]
        return held | (run(fresh) if fresh else {})

    def _held(self, pool_id: str, tokens: list[str]) -> dict[str, dict[str, Any]]:
        """The allocations ``tokens`` hold in the pool, by token."""
        with self._connect() as conn:
            return {row.request_token: _as_dict(row) for row in conn.execute(
                sa.select(*_COLUMNS).where(ALLOCATIONS.c.pool_id == pool_id,
                                           ALLOCATIONS.c.request_token.in_(tokens)))}

    def _allocate_batch_portable(self, pool_id: str, definition: PoolDefinition,
                                 requests: list[tuple[str, str | None]]) -> dict[str, dict[str, Any]]:
        """The batch as a few statements in one transaction: the lowest free ordinals, one
        raise of the mark, one multi-row insert (on MariaDB straight on the driver:
        :mod:`fabric.ipam.mariadb`)."""
        def on_driver(requests: list[tuple[str, str | None]]) -> dict[str, dict[str, Any]]:
            with self._gate:
                connection = self._hot.raw_connection()
                try:
                    rows = mariadb.allocate_batch(connection, pool_id, definition, requests, BATCH_EXTEND_BY)
                except sa.exc.DBAPIError as exc:
                    if exc.connection_invalidated:
                        self._hot.dispose(close=False)  # as in _run: the others are most likely gone too
                    raise
                finally:
                    connection.close()
            return {row["request_token"]: _allocation(pool_id, row["address"], row["ordinal"],
                                                      row["request_token"], row["port_id"]) for row in rows}

        def run(requests: list[tuple[str, str | None]]) -> dict[str, dict[str, Any]]:
            with self._begin(hot=True) as conn:
                ordinals = steps.take_lowest_free(conn, self.db.backend, pool_id, len(requests))
                if ordinals is None:
                    # Another worker took some of them: which ones is unknown, so roll back.
                    raise _BatchRaced(pool_id)
                need = len(requests) - len(ordinals)
                if need:
                    mark = conn.execute(sa.select(POOLS.c.next_ordinal).where(POOLS.c.id == pool_id)).scalar() or 0
                    step = steps.mark_step(need, mark, definition.limit, BATCH_EXTEND_BY)
                    upto = steps.bump_mark(conn, self.db.backend, pool_id, definition.limit, step)
                    if upto is not None:
                        first = upto - step
                        ordinals.extend(range(first, first + need))
                        steps.add_free(conn, self.db.backend, pool_id, range(first + need, upto))
                rows = [{"pool_id": pool_id, "address": definition.address(o), "ordinal": o,
                         "request_token": token, "port_id": port}
                        for (token, port), o in zip(requests, ordinals, strict=False)]
                if rows:
                    conn.execute(ALLOCATIONS.insert(), rows)
            return {row["request_token"]: _allocation(pool_id, row["address"], row["ordinal"],
                                                      row["request_token"], row["port_id"])
                    for row in rows}

        return self._batch_answering_held(on_driver if self.db.backend == "mysql" else run, pool_id, requests)

    def _allocate_onestep(self, sql: str, pool_id: str, request_token: str, port_id: str | None,
                          limit: int) -> tuple[int | None, dict[str, Any] | None]:
        """PostgreSQL: one prepared statement: (the free ordinal it aimed at, the new
        allocation or None when it took nothing). IntegrityError when the token is held."""
        (exists, candidate, address, ordinal), = self._run(sql, {
            "pool": pool_id, "token": request_token, "port": port_id, "limit": limit, "chunk": EXTEND_BY,
            "now": utcnow()})
        if not exists:
            self.forget(pool_id)
            raise NotFound(kind="address pool", ident=pool_id)
        if address is None:
            return candidate, None
        return candidate, _allocation(pool_id, address, ordinal, request_token, port_id)

    def _run(self, sql: str, params: dict[str, Any], prepare: bool = True) -> list[tuple[Any, ...]]:
        """PostgreSQL: the rows of ``sql`` (driver SQL) run autocommitted on a hot connection,
        as a prepared statement if ``prepare``."""
        with self._gate:
            connection = self._hot.raw_connection()
            try:
                return onestep.run(connection, sql, params, prepare)
            except sa.exc.DBAPIError as exc:
                if exc.connection_invalidated:
                    # As SQLAlchemy does on a disconnect: the pool's other connections
                    # are most likely gone too (a database restart), so none is reused.
                    self._hot.dispose(close=False)
                raise
            finally:
                connection.close()

    def allocate_address(self, pool_id: str, address: Any, request_token: str,
                         port_id: str | None = None) -> dict[str, Any]:
        """Hold a named address for ``request_token``.

        Idempotent for the same token and address, and for an address ``port_id`` already
        holds (that allocation is returned). Raises InvalidAddress (not an address of the
        pool), AddressInUse (held by another token for another port),
        RequestTokenConflict (the token already holds another address).
        """
        # Read afresh (one primary-key read): the gateway this must refuse may have moved since
        # the definition was cached, and a cached one would hand out the new gateway by name.
        definition = self.definition(pool_id, fresh=True)
        text, ordinal = definition.check_explicit(address)
        if ordinal is not None and ordinal >= definition.limit:
            ordinal = None
        try:
            with self._begin() as conn:
                conn.execute(ALLOCATIONS.insert().values(
                    pool_id=pool_id, address=text, ordinal=ordinal, request_token=request_token,
                    port_id=port_id))
                if ordinal is not None:
                    conn.execute(FREE.delete().where(FREE.c.pool_id == pool_id, FREE.c.ordinal == ordinal))
        except sa.exc.IntegrityError:
            held = self.lookup(pool_id, request_token=request_token)
            if held is not None:
                if held["address"] == text:
                    return held
                raise RequestTokenConflict(token=request_token, pool=pool_id, held=held["address"],
                                           requested=text) from None
            holder = self.lookup(pool_id, address=text)
            if holder is not None and port_id is not None and holder["port_id"] == port_id:
                # The port holds it already (a user's port that a server boots on): it stays
                # held under the port's own token, so the server's release leaves it to the port.
                return holder
            if holder is not None:
                raise AddressInUse(address=text, pool=pool_id, holder=holder["request_token"]) from None
            self._why_not_inserted(pool_id, port_id)
            raise
        return _allocation(pool_id, text, ordinal, request_token, port_id)

    def _drop_stale(self, pool_id: str, ordinal: int | None, source: str | None) -> None:
        """The ordinal we took is held by an explicit allocation: stop offering it."""
        if ordinal is None:
            return
        with self._begin() as conn:
            if source == "mark":
                conn.execute(POOLS.update().where(POOLS.c.id == pool_id, POOLS.c.next_ordinal == ordinal)
                             .values(next_ordinal=ordinal + 1))
            else:
                held = (sa.select(ALLOCATIONS.c.id)
                        .where(ALLOCATIONS.c.pool_id == pool_id, ALLOCATIONS.c.ordinal == ordinal))
                conn.execute(FREE.delete().where(FREE.c.pool_id == pool_id, FREE.c.ordinal == ordinal,
                                                 sa.exists(held)))

    def _why_not_inserted(self, pool_id: str, port_id: str | None) -> None:
        """Raise NotFound when a foreign key (pool or port) made the insert fail."""
        with self._connect() as conn:
            if conn.execute(sa.select(POOLS.c.id).where(POOLS.c.id == pool_id)).first() is None:
                self.forget(pool_id)
                raise NotFound(kind="address pool", ident=pool_id)
            if port_id is not None and conn.execute(
                    sa.select(PORTS.c.id).where(PORTS.c.id == port_id)).first() is None:
                raise NotFound(kind="port", ident=port_id)

    # --- release and queries -----------------------------------------------------

    def release(self, pool_id: str, request_token: str | None = None,
                address: str | None = None) -> dict[str, Any] | None:
        """Free the allocation held by a token (or of an address); None if nothing was held.

        Idempotent. The address is free again when this returns.
        """
        if (request_token is None) == (address is None):
            raise ValueError("release takes exactly one of request_token or address")
        if self._releases is not None and request_token is not None:
            answer = self._releases.submit(pool_id, request_token)
            if answer is not FALLBACK:
                return answer
        if self.db.backend == "postgresql":
            by = "token" if request_token is not None else "address"
            released = self._release_onestep(by, pool=pool_id, token=request_token, address=address)
        else:
            where = ALLOCATIONS.c.request_token == request_token if request_token is not None \
                else ALLOCATIONS.c.address == address
            released = self._release_where(sa.and_(ALLOCATIONS.c.pool_id == pool_id, where))
        return released[0] if released else None

    def release_port(self, port_id: str) -> list[dict[str, Any]]:
        """Free every address held by ``port_id`` (in any pool). Idempotent."""
        if self.db.backend == "postgresql":
            return self._release_onestep("port", port=port_id)
        return self._release_where(ALLOCATIONS.c.port_id == port_id)

    def release_many(self, pool_id: str, tokens: list[str]) -> list[Any]:
        """Release several tokens of one pool in one transaction (GroupCommit's batch).

        A token repeated within the batch: its first request gets the allocation,
        the others None (as if they had come after it).
        """
        unique = list(dict.fromkeys(tokens))
        if self.db.backend == "postgresql" and len(unique) == 1:
            rows = self._release_onestep("token", pool=pool_id, token=unique[0])
        elif self.db.backend == "postgresql":
            rows = [_allocation(*row) for row in self._run(
                onestep.release_sql("tokens"), {"pool": pool_id, "tokens": unique}, prepare=False)]
        else:
            rows = self._release_where_once(sa.and_(ALLOCATIONS.c.pool_id == pool_id,
                                                    ALLOCATIONS.c.request_token.in_(unique)))
        released: dict[str, dict[str, Any]] = {row["request_token"]: row for row in rows}
        return [released.pop(token, None) for token in tokens]

    def _release_onestep(self, by: str, **params: Any) -> list[dict[str, Any]]:
        """PostgreSQL: delete and free in one autocommitted prepared statement (retried once if
        the connection was found dead: releasing is idempotent)."""
        for attempt in (1, 2):
            try:
                return [_allocation(*row) for row in self._run(onestep.release_sql(by), params)]
            except sa.exc.OperationalError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _release_where(self, condition: sa.ColumnElement[bool]) -> list[dict[str, Any]]:
        try:
            return self._release_where_once(condition)
        except sa.exc.OperationalError:
            # A dead connection (or a deadlock): releasing is idempotent, so try once more.
            return self._release_where_once(condition)

    def _release_where_once(self, condition: sa.ColumnElement[bool]) -> list[dict[str, Any]]:
        with self._begin(hot=True) as conn:
            rows = conn.execute(ALLOCATIONS.delete().where(condition).returning(*_COLUMNS)).all()
            freed = [{"pool_id": row.pool_id, "ordinal": row.ordinal} for row in rows if row.ordinal is not None]
            if freed:
                conn.execute(steps.insert_ignoring_duplicates(self.db.backend, FREE), freed)
        return [_as_dict(row) for row in rows]

    def lookup(self, pool_id: str, request_token: str | None = None,
               address: str | None = None) -> dict[str, Any] | None:
        """The allocation of a token (or of an address) in a pool, or None."""
        query = sa.select(*_COLUMNS).where(ALLOCATIONS.c.pool_id == pool_id)
        if request_token is not None:
            query = query.where(ALLOCATIONS.c.request_token == request_token)
        if address is not None:
            query = query.where(ALLOCATIONS.c.address == address)
        with self._connect() as conn:
            row = conn.execute(query).first()
        return _as_dict(row) if row is not None else None

    def list(self, pool_id: str | None = None, port_id: str | None = None) -> list[dict[str, Any]]:
        """Allocations of a pool and/or a port, lowest ordinal first."""
        query = sa.select(*_COLUMNS).order_by(ALLOCATIONS.c.pool_id, ALLOCATIONS.c.ordinal, ALLOCATIONS.c.address)
        if pool_id is not None:
            query = query.where(ALLOCATIONS.c.pool_id == pool_id)
        if port_id is not None:
            query = query.where(ALLOCATIONS.c.port_id == port_id)
        with self._connect() as conn:
            return [_as_dict(row) for row in conn.execute(query)]
