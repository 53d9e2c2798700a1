"""expand: compute rebuild, resize, migrate, snapshot (the migrations table)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05

Expand only: a new table the previous release's workers never touch. Rebuild and
snapshot need no schema: their task states are new values of the existing columns.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql')
JSON = sa.JSON()


def upgrade() -> None:
    op.create_table(
        'migrations',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('instance_id', sa.String(length=36), nullable=False),
        sa.Column('migration_type', sa.String(length=16), nullable=False),
        sa.Column('status', sa.String(length=32), nullable=False),
        sa.Column('source_host', sa.String(length=255), nullable=False),
        sa.Column('dest_host', sa.String(length=255), nullable=True),
        sa.Column('requested_host', sa.String(length=255), nullable=True),
        sa.Column('old_flavor', JSON, nullable=False),
        sa.Column('new_flavor', JSON, nullable=False),
        sa.Column('old_vm_state', sa.String(length=32), nullable=False),
        sa.Column('created_at', TIMESTAMP, nullable=False),
        sa.Column('updated_at', TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], name=op.f('fk_migrations_instance_id_instances'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_migrations')),
    )
    op.create_index(op.f('ix_migrations_instance_id'), 'migrations', ['instance_id'], unique=False)
    op.create_index(op.f('ix_migrations_status'), 'migrations', ['status'], unique=False)


def downgrade() -> None:
    # The table takes its indexes with it (MariaDB refuses to drop the one its foreign key uses).
    op.drop_table('migrations')
