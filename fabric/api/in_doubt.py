"""A create whose COMMIT lost the database: written or not, found out before answering.

When the connection goes while the server runs COMMIT (a database restarting, a server
gone away), the client cannot know whether the transaction was written. Answering 503 then
would be wrong half the time: the client sends the create again, as a 503 invites it to, and
gets two servers (a boot storm across a database restart showed it, as a quota used twice).

So an API handler that chose its rows' ids before writing asks the database, once it answers
again, whether its row is there (:func:`settle`), waiting at most :data:`ANSWER_WITHIN`
seconds: found, the create went through and is answered as such; not found, nothing was
written and the 503 is the truth. Still unreachable after that, the handler answers 503 and a
thread of this process keeps asking (for up to :data:`UNDO_WITHIN` seconds), undoing the
create if it finds it written, so that a 503 leaves nothing behind. (A process stopped before
then leaves that to an operator: its warning names the servers.)

Server creates settle with an undo of their own (compute/servers.py); every other create of
rows whose ids this process chooses (networks, subnets, routers, volumes, images, ...) runs its
transaction in :func:`creating`, which settles without one: written, the create is answered
as done; not written, 503; still unknown, 503 and a warning naming the row to look for.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

import sqlalchemy as sa
from sqlalchemy import orm

from fabric.db import Database
from fabric.db.retry import is_connection_error, retry_on_disconnect
from fabric.exception import DatabaseUnavailable

LOG = logging.getLogger(__name__)

#: Longest a request waits for the database to say whether its commit was written.
ANSWER_WITHIN = 20.0
#: Longest a thread goes on asking, after the answer, to undo a create the client was told failed.
UNDO_WITHIN = 3600.0


def settle(db: Database, error: BaseException, written: Callable[[object], bool],
           undo: Callable[[], None] | None, what: str) -> bool:
    """Whether a transaction whose COMMIT raised ``error`` was written.

    False at once when ``error`` is no lost connection (the server refused the commit: nothing
    was written). Otherwise ``written(session)`` is asked, once the database answers, within
    :data:`ANSWER_WITHIN` seconds; no answer by then is False too, and ``undo()`` is run
    (again after each lost connection, for up to :data:`UNDO_WITHIN` seconds) by a thread of
    its own once the database is back, if ``written`` then says the commit was written (without
    ``undo``, a warning says what to look for). ``what`` names the transaction in the log.
    """
    if not is_connection_error(error):
        return False

    def ask() -> bool:
        with db.begin() as session:
            return written(session)

    try:
        found = retry_on_disconnect(ask, give_up_after=ANSWER_WITHIN, what=f"checking whether {what} was written")
    except DatabaseUnavailable:
        if undo is None:
            LOG.warning("Unknown whether %s was written (the database is still unreachable); it is answered "
                        "as failed: if it was written, it stays", what)
            return False
        LOG.warning("Unknown whether %s was written (the database is still unreachable); it is answered as "
                    "failed, and undone once the database answers if it was", what)
        threading.Thread(target=_undo_when_back, args=(ask, undo, what), daemon=True,
                         name=f"undo {what}").start()
        return False
    LOG.warning("The connection was lost while committing %s, which was %s", what,
                "written: answered as such" if found else "not written: answered as failed")
    return found


def _undo_when_back(ask: Callable[[], bool], undo: Callable[[], None], what: str) -> None:
    """Undo the create once the database says it was written (see :func:`settle`)."""
    try:
        if retry_on_disconnect(ask, give_up_after=UNDO_WITHIN, what=f"checking whether {what} was written"):
            retry_on_disconnect(undo, give_up_after=UNDO_WITHIN, what=f"undoing {what}")
            LOG.warning("Undid %s: it was written although its client was told it failed", what)
    except Exception:
        LOG.exception("Could not undo %s, which its client was told failed: it may need deleting by hand", what)


@contextlib.contextmanager
def creating(db: Database, what: str) -> Iterator[orm.Session]:
    """One transaction, as :meth:`Database.begin` gives, for a create of rows whose ids this
    process chooses (uuids: a column default run here, or set by the caller).

    A COMMIT that loses its connection is settled (:func:`settle`, without an undo) by looking
    for one row the transaction inserted: written, the block ends as if the COMMIT had
    answered; not written, or still unknown after :data:`ANSWER_WITHIN` seconds, the lost
    connection is raised (a 503). ``what`` names the create in the log. A transaction that
    inserted no row with such an id raises as :meth:`Database.begin` does.
    """
    witness: list[tuple[type, str]] = []

    def remember_first_insert(session: orm.Session, _context) -> None:
        if witness:
            return
        for row in session.new:
            mapper = sa.inspect(row).mapper
            if len(mapper.primary_key) != 1:
                continue
            value = getattr(row, mapper.get_property_by_column(mapper.primary_key[0]).key)
            if isinstance(value, str):  # an id chosen here, never one the database numbered
                witness.append((mapper.class_, value))
                return

    session = db.sessionmaker()
    sa.event.listen(session, "after_flush", remember_first_insert)
    try:
        with session.begin():
            yield session
            session.flush()
    except sa.exc.DBAPIError as error:
        if not witness:
            raise
        model, ident = witness[0]
        if not settle(db, error, lambda check: check.get(model, ident) is not None, None,
                      f"{what} ({model.__tablename__} {ident})"):
            raise
    finally:
        session.close()
