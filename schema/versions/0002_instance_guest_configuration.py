"""instances: user_data, key_data and launch_index for the metadata service

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('user_data', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('key_data', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('launch_index', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_column('launch_index')
        batch_op.drop_column('key_data')
        batch_op.drop_column('user_data')
