"""What a failed constraint means, the same way on SQLite, PostgreSQL and MariaDB.

A check-then-insert loses a race now and then: two requests both find a name free,
and the database's unique constraint refuses the second insert. That is the
answer the loser should get (409, "already exists"), never a 500.
:func:`violation` says which kind of constraint an ``IntegrityError`` broke.
"""

from __future__ import annotations

import sqlalchemy as sa

UNIQUE, FOREIGN_KEY = "unique", "foreign key"

# PostgreSQL SQLSTATEs; MySQL/MariaDB error numbers; SQLite's messages.
_PG = {"23505": UNIQUE, "23503": FOREIGN_KEY}
_MYSQL = {1062: UNIQUE, 1586: UNIQUE, 1451: FOREIGN_KEY, 1452: FOREIGN_KEY}
_SQLITE = (("UNIQUE constraint failed", UNIQUE), ("FOREIGN KEY constraint failed", FOREIGN_KEY))


def violation(exc: BaseException) -> str | None:
    """:data:`UNIQUE` or :data:`FOREIGN_KEY` for an IntegrityError that broke one, else None."""
    if not isinstance(exc, sa.exc.IntegrityError):
        return None
    orig = exc.orig
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if state in _PG:
        return _PG[state]
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL:
        return _MYSQL[args[0]]
    text = str(orig)
    return next((kind for marker, kind in _SQLITE if marker in text), None)
