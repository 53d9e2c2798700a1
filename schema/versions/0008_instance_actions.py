"""expand: instance actions (server event list)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05

Expand only: a new table the previous release's workers never touch.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql')


def upgrade() -> None:
    op.create_table(
        'instance_actions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('instance_id', sa.String(length=36), nullable=False),
        sa.Column('action', sa.String(length=32), nullable=False),
        sa.Column('request_id', sa.String(length=64), nullable=False),
        sa.Column('user_id', sa.String(length=36), nullable=True),
        sa.Column('project_id', sa.String(length=36), nullable=True),
        sa.Column('start_time', TIMESTAMP, nullable=False),
        sa.Column('finish_time', TIMESTAMP, nullable=True),
        sa.Column('result', sa.String(length=16), nullable=True),
        sa.Column('message', sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], name=op.f('fk_instance_actions_instance_id_instances'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_instance_actions')),
        sa.UniqueConstraint('instance_id', 'request_id', name=op.f('uq_instance_actions_instance_id_request_id')),
    )
    op.create_index(op.f('ix_instance_actions_instance_id'), 'instance_actions', ['instance_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_instance_actions_instance_id'), table_name='instance_actions')
    op.drop_table('instance_actions')
