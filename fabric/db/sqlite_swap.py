"""Rebuilding a SQLite table in place without firing the cascades that point at it.

SQLite cannot ALTER a table's constraints, and Alembic's batch mode rebuilds the table with
DROP TABLE, which under ``PRAGMA foreign_keys=ON`` (fabric's SQLite connections) fires every
ON DELETE CASCADE that references it: a rebuilt ``roles`` would take every grant with it.
:func:`swap_table` instead builds the new table beside the old one, copies the rows, drops
the old one and renames the new one into its place with foreign keys off, so the other
tables' references keep naming the table, now the new one. Migrations use it; it must keep
its behaviour for them.
"""

from __future__ import annotations


def swap_table(bind, table: str, create_new: str, copy_rows: str) -> None:
    """Replace SQLite's ``table`` by ``<table>_new`` (made by ``create_new``, filled by
    ``copy_rows``), keeping every row that references it. Raises RuntimeError when foreign
    keys cannot be turned off or the result breaks one (checked, not assumed)."""
    # SQLite ignores foreign_keys=OFF inside a transaction, and the revisions before the caller
    # may have left one open (sqlite3 begins one at their version row's UPDATE): it is ended
    # here, at a revision boundary (alembic_version names the revision before, which is true).
    bind.connection.dbapi_connection.commit()
    bind.exec_driver_sql("PRAGMA foreign_keys=OFF")
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError(f"could not turn SQLite's foreign keys off to rebuild {table}")
    try:
        for statement in (create_new, copy_rows, f"DROP TABLE {table}", f"ALTER TABLE {table}_new RENAME TO {table}"):
            bind.exec_driver_sql(statement)
        broken = bind.exec_driver_sql("PRAGMA foreign_key_check").all()
        if broken:
            raise RuntimeError(f"rebuilding {table} broke foreign keys: {broken}")
    finally:
        bind.exec_driver_sql("PRAGMA foreign_keys=ON")
