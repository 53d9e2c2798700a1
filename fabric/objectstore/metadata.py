"""The objectstore's rows in the shared database: credentials, buckets, objects, uploads, parts.

Each function is one short transaction. Switching which blob a key names is a
compare-and-swap (``UPDATE ... WHERE blob = <the one read>``, retried when it
lost a race), never a lock, so it holds on every backend (DESIGN.md §4).
Functions that unlink nothing themselves return the blob ids the caller must
remove from storage once the transaction committed.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import secrets
import threading
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from fabric.db import Database
from fabric.db.models import (
    Bucket,
    Ec2Credential,
    MultipartUpload,
    Project,
    RoleAssignment,
    StoredObject,
    UploadPart,
    User,
)
from fabric.db.retry import is_connection_error, retry_on_disconnect
from fabric.db.types import utcnow
from fabric.objectstore.errors import S3Error, no_such_bucket, no_such_upload

#: Compare-and-swap attempts before a write gives up (only ever reached under a storm of writers).
MAX_ATTEMPTS = 20

_OBJECTS = StoredObject.__table__
_PARTS = UploadPart.__table__


@dataclasses.dataclass(frozen=True)
class Principal:
    """Whom an access key speaks for."""

    access_key: str
    secret: str
    user_id: str
    project_id: str
    project_name: str


@dataclasses.dataclass(frozen=True)
class BucketInfo:
    id: str
    name: str
    project_id: str
    acl: str
    created_at: datetime.datetime


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    key: bytes
    blob: str
    size: int
    etag: str
    content_type: str
    meta: dict
    checksum_algorithm: str | None
    checksum_value: str | None
    checksum_type: str | None
    last_modified: datetime.datetime


_OBJECT_COLUMNS = [getattr(StoredObject, f.name) for f in dataclasses.fields(ObjectInfo)]


def autocommit(db: Database) -> sa.engine.Engine:
    """An engine on ``db``'s database in autocommit mode, for the hot paths' single statements
    (run them with :func:`single`): a read or a lone INSERT is atomic by itself, and skipping
    BEGIN and COMMIT/ROLLBACK saves two of its three round trips (on PostgreSQL, most of a small
    request's time). On a server database it has its own pool, of ``db``'s size, that does not
    ping a connection at each checkout (another round trip per request): :func:`single` runs
    the statement again when the connection turns out to be lost instead."""
    engine = getattr(db, "_objectstore_autocommit", None)
    if engine is None:
        base = db
        if db.backend != "sqlite":
            base = Database(db.url.render_as_string(hide_password=False), pool_size=db.engine.pool.size(),
                            pre_ping=False)
        engine = base.engine.execution_options(isolation_level="AUTOCOMMIT")
        db._objectstore_autocommit = engine
    return engine


#: Seconds a hot-path statement keeps being retried while the database is unreachable.
RETRY_SECONDS = 10.0


class _Core:
    """A SQLAlchemy autocommit connection (SQLite, MariaDB): statements through SQLAlchemy's execution."""

    def __init__(self, engine: sa.engine.Engine) -> None:
        self.connection = engine.connect()

    def run(self, statement: sa.Executable, params: dict[str, Any], fetch: bool) -> tuple | None:
        result = self.connection.execute(statement, params)
        return result.first() if fetch else None

    def close(self) -> None:
        self.connection.close()  # back to the pool, which drops it if it was lost


#: The hot statements in psycopg's own parameter style, compiled once each (by statement and
#: parameter names: an INSERT's columns are the parameters it is given).
_DRIVER_SQL: dict[tuple[int, tuple[str, ...]], tuple[sa.Executable, str]] = {}


def _driver_sql(statement: sa.Executable, params: dict[str, Any]) -> str:
    names = tuple(params)
    cached = _DRIVER_SQL.get((id(statement), names))
    if cached is None or cached[0] is not statement:
        from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect

        sql = str(statement.compile(dialect=psycopg_dialect.dialect(), column_keys=list(names)))
        cached = _DRIVER_SQL[(id(statement), names)] = (statement, sql)
    return cached[1]


class _Driver:
    """A pooled psycopg connection in autocommit with one cursor reused by every statement
    (PostgreSQL). Straight to the driver, each statement prepared once per connection:
    SQLAlchemy's execution (a new cursor, its adapters map, the result's metadata) cost more
    CPU than psycopg's own work, most of a small GET's (profiled with py-spy under the bench)."""

    def __init__(self, engine: sa.engine.Engine) -> None:
        self.pooled = engine.raw_connection()
        try:
            connection = self.pooled.driver_connection
            connection.autocommit = True  # green waits: Database's pool made it so (fabric.db.green_psycopg)
            self.cursor = connection.cursor()
        except BaseException:
            self.pooled.close()
            raise

    def run(self, statement: sa.Executable, params: dict[str, Any], fetch: bool) -> tuple | None:
        """The statement's first row (None when none or not ``fetch``); errors raised as
        SQLAlchemy's (IntegrityError ...), a lost connection invalidated as the pool would."""
        import psycopg
        from psycopg.types.json import Json

        sql = _driver_sql(statement, params)
        args = {name: Json(value) if isinstance(value, dict) else value for name, value in params.items()}
        try:
            self.cursor.execute(sql, args, prepare=True)
            return self.cursor.fetchone() if fetch else None
        except psycopg.Error as exc:
            lost = is_connection_error(exc)
            if lost:
                self.pooled.invalidate(exc)
            raise sa.exc.DBAPIError.instance(sql, params, exc, psycopg.Error, connection_invalidated=lost) from exc

    def close(self) -> None:
        self.pooled.close()


class _Held:
    """Autocommit connections kept open between statements (at most the pool's size), so a
    statement skips the pool's checkout and check-in (an isolation switch and a reset each,
    costing more CPU than the statement). Green threads take turns; none is shared."""

    def __init__(self, engine: sa.engine.Engine, limit: int, raw: bool) -> None:
        self.engine = engine
        self.limit = limit
        self.opener = _Driver if raw else _Core
        self.idle: list[_Driver | _Core] = []

    def take(self) -> _Driver | _Core:
        return self.idle.pop() if self.idle else self.opener(self.engine)

    def give_back(self, connection: _Driver | _Core) -> None:
        if len(self.idle) < self.limit:
            self.idle.append(connection)
        else:
            connection.close()

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()


def _held(db: Database) -> _Held:
    held = getattr(db, "_objectstore_held", None)
    if held is None:
        # Not on SQLite: a file connection costs nothing to open, and one kept open would hold the file.
        held = db._objectstore_held = _Held(autocommit(db), 0 if db.backend == "sqlite" else db.engine.pool.size(),
                                            raw=db.backend == "postgresql")
    return held


def release(db: Database) -> None:
    """Close the connections :func:`single` keeps open for ``db`` (before disposing of it)."""
    held = getattr(db, "_objectstore_held", None)
    if held is not None:
        held.close()


def single(db: Database, statement: sa.Executable, params: dict[str, Any], *, fetch: bool = True) -> tuple | None:
    """Run one statement in autocommit (:func:`autocommit`) on a connection kept open: its first
    row, a tuple in the statement's column order (None when none or when not ``fetch``). Run
    again when the connection was lost (a stale connection after a database restart), so it must
    be safe to run twice: a read, or an INSERT whose caller recognises its own earlier success.
    DatabaseUnavailable after RETRY_SECONDS."""
    held = _held(db)

    def once() -> Any:
        connection = held.take()
        try:
            row = connection.run(statement, params, fetch)
        except BaseException as exc:
            connection.close()
            if is_connection_error(exc):
                held.close()  # opened before the loss too: the pool replaces them at checkout
            raise
        held.give_back(connection)
        return row

    return retry_on_disconnect(once, give_up_after=RETRY_SECONDS, what="an objectstore statement")


_PRINCIPAL = (sa.select(Ec2Credential.access, Ec2Credential.secret, Ec2Credential.user_id,
                        Ec2Credential.project_id, Project.name)
              .join(User, User.id == Ec2Credential.user_id)
              .join(Project, Project.id == Ec2Credential.project_id)
              .where(Ec2Credential.access == sa.bindparam("access"), User.enabled.is_(True),
                     Project.enabled.is_(True))
              .where(sa.exists().where(RoleAssignment.user_id == Ec2Credential.user_id,
                                       RoleAssignment.project_id == Ec2Credential.project_id)))


def principal(db: Database, access_key: str) -> Principal | None:
    """The live credential ``access_key`` names: its user and project enabled and the user still
    holding a role on the project; None otherwise."""
    row = single(db, _PRINCIPAL, {"access": access_key})
    return Principal(*row) if row else None


# --- buckets -----------------------------------------------------------------------


def _bucket_info(row: Any) -> BucketInfo:
    """A bucket from a row whose first columns are :data:`_BUCKET_COLUMNS`."""
    return BucketInfo(*row[:5])


_BUCKETS = Bucket.__table__
_BUCKET_COLUMNS = [_BUCKETS.c.id, _BUCKETS.c.name, _BUCKETS.c.project_id, _BUCKETS.c.acl, _BUCKETS.c.created_at]
# Built once: the hot paths (every request reads its bucket; GET and HEAD read bucket and object in
# one round trip) run on Core connections, not ORM sessions, which cost more than the query itself.
_BUCKET_BY_NAME = sa.select(*_BUCKET_COLUMNS).where(_BUCKETS.c.name == sa.bindparam("name"))
_BUCKET_AND_OBJECT = (
    sa.select(*_BUCKET_COLUMNS, *[_OBJECTS.c[f.name].label(f"o_{f.name}") for f in dataclasses.fields(ObjectInfo)])
    .select_from(_BUCKETS.outerjoin(_OBJECTS, sa.and_(_OBJECTS.c.bucket_id == _BUCKETS.c.id,
                                                      _OBJECTS.c.key == sa.bindparam("key"))))
    .where(_BUCKETS.c.name == sa.bindparam("name")))


def get_bucket(db: Database, name: str) -> BucketInfo:
    """The bucket called ``name``; NoSuchBucket when there is none."""
    row = single(db, _BUCKET_BY_NAME, {"name": name})
    if row is None:
        raise no_such_bucket(name)
    return _bucket_info(row)


def get_bucket_and_object(db: Database, name: str, key: bytes) -> tuple[BucketInfo, ObjectInfo | None]:
    """The bucket called ``name`` and its object ``key`` (None when absent), in one query; NoSuchBucket."""
    row = single(db, _BUCKET_AND_OBJECT, {"name": name, "key": key})
    if row is None:
        raise no_such_bucket(name)
    if row[6] is None:  # the object's blob: no such key
        return _bucket_info(row), None
    return _bucket_info(row), ObjectInfo(*row[5:])


def list_buckets(db: Database, project_id: str) -> list[BucketInfo]:
    with db.begin() as session:
        rows = session.execute(sa.select(Bucket.id, Bucket.name, Bucket.project_id, Bucket.acl, Bucket.created_at)
                               .where(Bucket.project_id == project_id).order_by(Bucket.name)).all()
    return [_bucket_info(row) for row in rows]


def create_bucket(db: Database, name: str, project_id: str, owner_id: str, acl: str) -> None:
    """Create the bucket; BucketAlreadyOwnedByYou or BucketAlreadyExists when the name is taken."""
    try:
        with db.begin() as session:
            session.add(Bucket(id=str(uuid.uuid4()), name=name, project_id=project_id, owner_id=owner_id, acl=acl))
    except sa.exc.IntegrityError:
        existing = get_bucket(db, name)
        if existing.project_id == project_id:
            raise S3Error("BucketAlreadyOwnedByYou", BucketName=name) from None
        raise S3Error("BucketAlreadyExists", BucketName=name) from None


def delete_bucket(db: Database, bucket: BucketInfo) -> None:
    """Delete an empty bucket; BucketNotEmpty while it holds an object or an upload in progress."""
    empty = ~sa.exists().where(StoredObject.bucket_id == bucket.id) & \
        ~sa.exists().where(MultipartUpload.bucket_id == bucket.id)
    with db.begin() as session:
        gone = session.execute(sa.delete(Bucket).where(Bucket.id == bucket.id, empty)).rowcount
        if gone:
            return
        still_there = session.scalar(sa.select(Bucket.id).where(Bucket.id == bucket.id))
    if still_there:
        raise S3Error("BucketNotEmpty", BucketName=bucket.name)
    raise no_such_bucket(bucket.name)


def set_bucket_acl(db: Database, bucket: BucketInfo, acl: str) -> None:
    with db.begin() as session:
        session.execute(sa.update(Bucket).where(Bucket.id == bucket.id).values(acl=acl))


# --- objects -------------------------------------------------------------------------


_INSERT_OBJECT = sa.insert(_OBJECTS)
_OBJECT_BY_KEY = sa.select(*_OBJECT_COLUMNS).where(StoredObject.bucket_id == sa.bindparam("bucket_id"),
                                                   StoredObject.key == sa.bindparam("key"))


def get_object(db: Database, bucket_id: str, key: bytes) -> ObjectInfo | None:
    row = single(db, _OBJECT_BY_KEY, {"bucket_id": bucket_id, "key": key})
    return ObjectInfo(*row) if row else None


def _bucket_gone(error: sa.exc.IntegrityError, db: Database, bucket: BucketInfo) -> None:
    """Raise NoSuchBucket when an insert failed because the bucket was deleted meanwhile."""
    with db.begin() as session:
        if session.scalar(sa.select(Bucket.id).where(Bucket.id == bucket.id)) is None:
            raise no_such_bucket(bucket.name) from None


#: The columns a new object's row is written with (all but the generated id).
_NEW_ROW_COLUMNS = ("bucket_id", "key", "blob", "size", "etag", "content_type", "meta", "checksum_algorithm",
                    "checksum_value", "checksum_type", "last_modified")
#: Most rows one group commit writes.
MAX_GROUP = 32


@functools.lru_cache(maxsize=MAX_GROUP)
def _insert_rows(count: int) -> sa.Insert:
    """One INSERT of ``count`` rows, the i-th row's values named ``<column>_<i>``."""
    # Typed by hand: SQLAlchemy types only the first row's parameters by their columns.
    return sa.insert(_OBJECTS).values([{column: sa.bindparam(f"{column}_{index}", type_=_OBJECTS.c[column].type)
                                        for column in _NEW_ROW_COLUMNS} for index in range(count)])


class GroupCommit:
    """Group commit of new objects' rows: INSERTs that arrive while one is running wait for it,
    then go together, as one multi-row INSERT (one round trip, one commit, one WAL flush for
    all of them). ``write(rows)`` runs one group; it returns False when the group failed as a
    whole (a key that exists already, a bucket deleted meanwhile): each of its callers then
    takes the one-row path, which finds out which it was. A row is reported written only once
    its group committed, so a PUT answered 200 is as durable as before."""

    def __init__(self, write: Callable[[list[dict[str, Any]]], bool], limit: int = MAX_GROUP) -> None:
        self._write = write
        self._limit = limit
        self._lock = threading.Lock()  # green under eventlet; callers may also be native threads
        self._queue: list[_Waiting] = []
        self._leading = False
        self.groups = 0  # groups written, for tests and curiosity

    def insert(self, row: dict[str, Any]) -> bool:
        """Wait until ``row`` was written with the rows queued beside it: True, or False when the
        group failed (the row is not written)."""
        me = _Waiting(row)
        with self._lock:
            self._queue.append(me)
        while True:
            with self._lock:
                lead = not self._leading
                if lead:
                    self._leading = True
                    group, self._queue = self._queue[:self._limit], self._queue[self._limit:]
            if not lead:
                me.woken.wait()
                me.woken.clear()
                if me.written is not None:
                    return me.written
                continue  # asked to lead the next group
            written = False
            try:
                self.groups += 1
                written = self._write([waiting.row for waiting in group])
            finally:
                with self._lock:
                    self._leading = False
                    following = self._queue[0] if self._queue else None
                for waiting in group:
                    waiting.written = written
                    if waiting is not me:
                        waiting.woken.set()
                if following is not None:
                    following.woken.set()  # the next group's leader
            if me.written is not None:
                return me.written


class _Waiting:
    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row
        self.written: bool | None = None
        self.woken = threading.Event()


def _postgresql_type(column: str) -> str:
    from sqlalchemy.dialects import postgresql

    return _OBJECTS.c[column].type.compile(dialect=postgresql.dialect())


#: PostgreSQL: a group as one JSON document, its rows read back by json_to_recordset (the key
#: as hex, decoded to bytea). One statement whatever the group's size, prepared once per
#: connection, with one parameter the json module writes in C. A multi-row VALUES list is a
#: statement of its own for each size, which psycopg parsed again for every group (a twentieth
#: of a PUT's CPU, py-spy under the bench); one array per column costs psycopg's array dumper,
#: Python code run for every value (a tenth of a PUT's CPU, cProfile under the bench).
_INSERT_RECORDSET = sa.text(
    f"INSERT INTO {_OBJECTS.name} ({', '.join(_NEW_ROW_COLUMNS)}) SELECT "
    + ", ".join("decode(r.key, 'hex')" if column == "key" else f"r.{column}" for column in _NEW_ROW_COLUMNS)
    + " FROM json_to_recordset(CAST(:rows AS JSON)) AS r("
    + ", ".join(f"{column} {'TEXT' if column == 'key' else _postgresql_type(column)}" for column in _NEW_ROW_COLUMNS)
    + ")")


def _recordset(rows: list[dict[str, Any]]) -> str:
    """``rows`` as the JSON document :data:`_INSERT_RECORDSET` reads."""
    return json.dumps([dict({column: row[column] for column in _NEW_ROW_COLUMNS}, key=row["key"].hex(),
                            last_modified=row["last_modified"].isoformat()) for row in rows])


def _write_group(db: Database, rows: list[dict[str, Any]]) -> bool:
    if db.backend == "postgresql":
        params = {"rows": _recordset(rows)}
        statement = _INSERT_RECORDSET
    else:
        params = {f"{column}_{index}": row[column] for index, row in enumerate(rows) for column in _NEW_ROW_COLUMNS}
        statement = _insert_rows(len(rows))
    try:
        single(db, statement, params, fetch=False)
    except sa.exc.IntegrityError:
        return False
    return True


def group_commit(db: Database) -> GroupCommit:
    """``db``'s group commit of new objects' rows (one per process and database)."""
    group = getattr(db, "_objectstore_group_commit", None)
    if group is None:
        group = db._objectstore_group_commit = GroupCommit(functools.partial(_write_group, db))
    return group


def put_object(db: Database, bucket: BucketInfo, key: bytes, values: dict[str, Any]) -> str | None:
    """Make ``key`` name the blob and attributes in ``values``; returns the blob it named before.

    NoSuchBucket when the bucket was deleted meanwhile.
    """
    values = dict(values, last_modified=values.get("last_modified") or utcnow())
    # A new key (the common case) is one row in a group commit; only an existing key needs the swap below.
    if group_commit(db).insert(dict(values, bucket_id=bucket.id, key=key)):
        return None
    try:
        single(db, _INSERT_OBJECT, dict(values, bucket_id=bucket.id, key=key), fetch=False)
        return None
    except sa.exc.IntegrityError as exc:
        _bucket_gone(exc, db, bucket)
    for _ in range(MAX_ATTEMPTS):
        try:
            with db.begin() as session:
                old = session.execute(sa.select(_OBJECTS.c.id, _OBJECTS.c.blob).where(
                    _OBJECTS.c.bucket_id == bucket.id, _OBJECTS.c.key == key)).first()
                if old is None:
                    session.execute(sa.insert(_OBJECTS).values(bucket_id=bucket.id, key=key, **values))
                    return None
                if old.blob == values["blob"]:
                    # Our own INSERT, committed although its connection was lost (single() ran it
                    # again, which found the key taken): nothing was replaced.
                    return None
                swapped = session.execute(sa.update(_OBJECTS).where(
                    _OBJECTS.c.id == old.id, _OBJECTS.c.blob == old.blob).values(**values)).rowcount
                if swapped == 1:
                    return old.blob
        except sa.exc.IntegrityError as exc:
            _bucket_gone(exc, db, bucket)
    raise S3Error("InternalError", f"too many concurrent writers of this key; retry (after {MAX_ATTEMPTS} tries)")


def delete_object(db: Database, bucket_id: str, key: bytes) -> str | None:
    """Remove ``key``; returns the blob it named (None when there was no such key)."""
    for _ in range(MAX_ATTEMPTS):
        with db.begin() as session:
            old = session.execute(sa.select(_OBJECTS.c.id, _OBJECTS.c.blob).where(
                _OBJECTS.c.bucket_id == bucket_id, _OBJECTS.c.key == key)).first()
            if old is None:
                return None
            if session.execute(sa.delete(_OBJECTS).where(_OBJECTS.c.id == old.id,
                                                         _OBJECTS.c.blob == old.blob)).rowcount == 1:
                return old.blob
    raise S3Error("InternalError", f"too many concurrent writers of this key; retry (after {MAX_ATTEMPTS} tries)")


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with ``prefix`` (None: no bound)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def list_keys(db: Database, bucket_id: str, prefix: bytes, after: bytes | None, limit: int,
              *, from_key: bytes | None = None) -> list[ObjectInfo]:
    """Up to ``limit`` objects whose keys start with ``prefix``, in byte order, after ``after``
    (exclusive) or from ``from_key`` (inclusive)."""
    query = sa.select(*_OBJECT_COLUMNS).where(StoredObject.bucket_id == bucket_id)
    if prefix:
        query = query.where(StoredObject.key >= prefix)
        end = prefix_end(prefix)
        if end is not None:
            query = query.where(StoredObject.key < end)
    if after is not None:
        query = query.where(StoredObject.key > after)
    if from_key is not None:
        query = query.where(StoredObject.key >= from_key)
    with db.begin() as session:
        rows = session.execute(query.order_by(StoredObject.key).limit(limit)).all()
    return [ObjectInfo(*row) for row in rows]


# --- multipart uploads ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class UploadInfo:
    id: str
    bucket_id: str
    key: bytes
    owner_id: str
    content_type: str
    meta: dict
    checksum_algorithm: str | None
    checksum_type: str | None
    initiated: datetime.datetime


_UPLOAD_COLUMNS = [getattr(MultipartUpload, f.name) for f in dataclasses.fields(UploadInfo)]


@dataclasses.dataclass(frozen=True)
class PartInfo:
    part_number: int
    blob: str
    size: int
    etag: str
    checksum_value: str | None
    last_modified: datetime.datetime


_PART_COLUMNS = [getattr(UploadPart, f.name) for f in dataclasses.fields(PartInfo)]


def create_upload(db: Database, bucket: BucketInfo, key: bytes, owner_id: str, content_type: str, meta: dict,
                  checksum_algorithm: str | None, checksum_type: str | None) -> str:
    upload_id = secrets.token_urlsafe(32)
    try:
        with db.begin() as session:
            session.add(MultipartUpload(id=upload_id, bucket_id=bucket.id, key=key, owner_id=owner_id,
                                        content_type=content_type, meta=meta, checksum_algorithm=checksum_algorithm,
                                        checksum_type=checksum_type))
    except sa.exc.IntegrityError as exc:
        _bucket_gone(exc, db, bucket)
        raise
    return upload_id


def get_upload(db: Database, bucket_id: str, key: bytes, upload_id: str) -> UploadInfo:
    """The upload ``upload_id`` of this bucket and key; NoSuchUpload otherwise."""
    with db.begin() as session:
        row = session.execute(sa.select(*_UPLOAD_COLUMNS).where(MultipartUpload.id == upload_id)).first()
    if row is None or row.bucket_id != bucket_id or row.key != key:
        raise no_such_upload(upload_id)
    return UploadInfo(*row)


def put_part(db: Database, upload_id: str, part_number: int, values: dict[str, Any]) -> str | None:
    """Record a part (replacing an earlier one of that number); returns the blob replaced.
    NoSuchUpload when the upload was completed or aborted meanwhile."""
    values = dict(values, last_modified=utcnow())
    for _ in range(MAX_ATTEMPTS):
        try:
            with db.begin() as session:
                where = (_PARTS.c.upload_id == upload_id, _PARTS.c.part_number == part_number)
                old = session.execute(sa.select(_PARTS.c.blob).where(*where)).first()
                if old is None:
                    session.execute(sa.insert(_PARTS).values(upload_id=upload_id, part_number=part_number, **values))
                    return None
                if session.execute(sa.update(_PARTS).where(*where, _PARTS.c.blob == old.blob)
                                   .values(**values)).rowcount == 1:
                    return old.blob
        except sa.exc.IntegrityError:
            with db.begin() as session:
                if session.get(MultipartUpload, upload_id) is None:
                    raise no_such_upload(upload_id) from None
    raise S3Error("InternalError", f"too many concurrent uploads of this part; retry (after {MAX_ATTEMPTS} tries)")


def list_parts(db: Database, upload_id: str, after: int = 0, limit: int = 10000) -> list[PartInfo]:
    with db.begin() as session:
        rows = session.execute(sa.select(*_PART_COLUMNS).where(UploadPart.upload_id == upload_id,
                                                               UploadPart.part_number > after)
                               .order_by(UploadPart.part_number).limit(limit)).all()
    return [PartInfo(*row) for row in rows]


def end_upload(db: Database, upload_id: str, bucket: BucketInfo | None = None, key: bytes | None = None,
               values: dict[str, Any] | None = None) -> tuple[list[str], str | None]:
    """Remove the upload and its parts; with ``values``, in the same transaction make ``key``
    name the assembled blob (CompleteMultipartUpload). Returns (the parts' blobs, the blob
    ``key`` named before). NoSuchUpload when another request ended it first."""
    for _ in range(MAX_ATTEMPTS):
        with db.begin() as session:
            blobs = list(session.scalars(sa.select(UploadPart.blob).where(UploadPart.upload_id == upload_id)))
            session.execute(sa.delete(UploadPart).where(UploadPart.upload_id == upload_id))
            if session.execute(sa.delete(MultipartUpload).where(MultipartUpload.id == upload_id)).rowcount != 1:
                raise no_such_upload(upload_id)
            if values is None:
                return blobs, None
            now = dict(values, last_modified=utcnow())
            old = session.execute(sa.select(_OBJECTS.c.id, _OBJECTS.c.blob).where(
                _OBJECTS.c.bucket_id == bucket.id, _OBJECTS.c.key == key)).first()
            if old is None:
                session.execute(sa.insert(_OBJECTS).values(bucket_id=bucket.id, key=key, **now))
                return blobs, None
            if session.execute(sa.update(_OBJECTS).where(_OBJECTS.c.id == old.id, _OBJECTS.c.blob == old.blob)
                               .values(**now)).rowcount == 1:
                return blobs, old.blob
            # Lost the race for the key: undo the upload's removal too, and try again.
            session.rollback()
            session.begin()
    raise S3Error("InternalError", f"too many concurrent writers of this key; retry (after {MAX_ATTEMPTS} tries)")


def list_uploads(db: Database, bucket_id: str, prefix: bytes, key_marker: bytes | None,
                 upload_id_marker: str | None, limit: int) -> list[UploadInfo]:
    query = sa.select(*_UPLOAD_COLUMNS).where(MultipartUpload.bucket_id == bucket_id)
    if prefix:
        query = query.where(MultipartUpload.key >= prefix)
        end = prefix_end(prefix)
        if end is not None:
            query = query.where(MultipartUpload.key < end)
    if key_marker is not None:
        if upload_id_marker:
            query = query.where(sa.or_(MultipartUpload.key > key_marker,
                                       sa.and_(MultipartUpload.key == key_marker,
                                               MultipartUpload.id > upload_id_marker)))
        else:
            query = query.where(MultipartUpload.key > key_marker)
    with db.begin() as session:
        rows = session.execute(query.order_by(MultipartUpload.key, MultipartUpload.id).limit(limit)).all()
    return [UploadInfo(*row) for row in rows]


def referenced_blobs(db: Database) -> set[str]:
    """Every blob an object or a part names (for the start-up sweep; one pass over both tables)."""
    with db.begin() as session:
        named = set(session.scalars(sa.select(StoredObject.blob)))
        named.update(session.scalars(sa.select(UploadPart.blob)))
    return named
