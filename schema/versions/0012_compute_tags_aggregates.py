"""expand: server descriptions and tags, host aggregates

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05

Expand only: a nullable column and new tables the previous release's workers never touch.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql')


def upgrade() -> None:
    op.add_column('instances', sa.Column('description', sa.String(length=255), nullable=True))
    op.create_table(
        'instance_tags',
        sa.Column('instance_id', sa.String(length=36), nullable=False),
        sa.Column('tag', sa.String(length=60), nullable=False),
        sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], name=op.f('fk_instance_tags_instance_id_instances'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('instance_id', 'tag', name=op.f('pk_instance_tags')),
    )
    op.create_index(op.f('ix_instance_tags_tag'), 'instance_tags', ['tag'], unique=False)
    op.create_table(
        'aggregates',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('uuid', sa.String(length=36), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('metadata_items', sa.JSON(), nullable=False),
        sa.Column('created_at', TIMESTAMP, nullable=False),
        sa.Column('updated_at', TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_aggregates')),
        sa.UniqueConstraint('name', name=op.f('uq_aggregates_name')),
        sa.UniqueConstraint('uuid', name=op.f('uq_aggregates_uuid')),
    )
    op.create_table(
        'aggregate_hosts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('aggregate_id', sa.Integer(), nullable=False),
        sa.Column('host', sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(['aggregate_id'], ['aggregates.id'],
                                name=op.f('fk_aggregate_hosts_aggregate_id_aggregates'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_aggregate_hosts')),
        sa.UniqueConstraint('aggregate_id', 'host', name=op.f('uq_aggregate_hosts_aggregate_id_host')),
    )
    op.create_index(op.f('ix_aggregate_hosts_host'), 'aggregate_hosts', ['host'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_aggregate_hosts_host'), table_name='aggregate_hosts')
    op.drop_table('aggregate_hosts')
    op.drop_table('aggregates')
    op.drop_index(op.f('ix_instance_tags_tag'), table_name='instance_tags')
    op.drop_table('instance_tags')
    op.drop_column('instances', 'description')
