"""outbox: casts committed with their state change, kept until the broker confirms them

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql')


def upgrade() -> None:
    op.create_table(
        'outbox',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('writer', sa.String(length=96), nullable=False),
        sa.Column('cast', sa.String(length=64), nullable=False),
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('payload', sa.JSON(), nullable=False),
        sa.Column('created_at', TIMESTAMP, nullable=False),
        sa.Column('lease_until', TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    )
    op.create_index('ix_outbox_kind_lease_until', 'outbox', ['kind', 'lease_until'], unique=False)
    op.create_index(op.f('ix_outbox_writer'), 'outbox', ['writer'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_outbox_writer'), table_name='outbox')
    op.drop_index('ix_outbox_kind_lease_until', table_name='outbox')
    op.drop_table('outbox')
