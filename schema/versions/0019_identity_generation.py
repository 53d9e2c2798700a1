"""expand: identity: one generation counter for the API's token cache

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06

Expand only: a new table of one row. Every write that can change what a token check answers
bumps it in the same transaction, and an API process reuses a token it validated while the
counter has not moved. Workers of the previous release do not bump it, which is safe only
because they do not write identity tables (the API does); upgrade the API processes together.
"""

import sqlalchemy as sa
from alembic import op

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        'identity_generation',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('generation', sa.BigInteger(), server_default='0', nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_identity_generation')))
    op.bulk_insert(table, [{'id': 1, 'generation': 0}])


def downgrade() -> None:
    op.drop_table('identity_generation')
