"""Alembic environment for fabric's schema.

Run through :mod:`fabric.db.migration` (``fabric-manage db sync``), which
hands over an open connection; ``alembic -c schema/alembic.ini`` also works
with ``-x url=...``.
"""

from alembic import context

from fabric.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        import sqlalchemy as sa

        from fabric.db.engine import normalize_url

        url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
        engine = sa.create_engine(normalize_url(url))
        with engine.begin() as connection:
            _run(connection)
        engine.dispose()
    else:
        _run(connection)


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
