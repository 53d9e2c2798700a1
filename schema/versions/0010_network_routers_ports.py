"""expand: network routers, user ports, subnet pools; descriptions and admin states

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05

Expand only: new tables, and new nullable or defaulted columns that the previous
release's workers ignore.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql')


def _timestamps() -> list[sa.Column]:
    return [sa.Column('created_at', TIMESTAMP, nullable=False), sa.Column('updated_at', TIMESTAMP, nullable=True)]


def upgrade() -> None:
    op.create_table(
        'subnet_pools',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('project_id', sa.String(length=36), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('description', sa.String(length=255), nullable=False),
        sa.Column('ip_version', sa.Integer(), nullable=False),
        sa.Column('prefixes', sa.JSON(), nullable=False),
        sa.Column('default_prefixlen', sa.Integer(), nullable=False),
        sa.Column('min_prefixlen', sa.Integer(), nullable=False),
        sa.Column('max_prefixlen', sa.Integer(), nullable=False),
        sa.Column('shared', sa.Boolean(), nullable=False),
        sa.Column('is_default', sa.Boolean(), nullable=False),
        sa.Column('revision', sa.Integer(), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_subnet_pools')),
    )
    op.create_index(op.f('ix_subnet_pools_project_id'), 'subnet_pools', ['project_id'])
    for table in ('networks', 'ports'):
        op.add_column(table, sa.Column('description', sa.String(length=255), nullable=False, server_default=''))
        op.add_column(table, sa.Column('admin_state_up', sa.Boolean(), nullable=False, server_default=sa.true()))
    op.add_column('subnets', sa.Column('description', sa.String(length=255), nullable=False, server_default=''))
    op.add_column('subnets', sa.Column('dns_nameservers', sa.JSON(), nullable=True))
    # Batch: SQLite adds a foreign key only by rebuilding the table.
    with op.batch_alter_table('subnets') as batch:
        batch.add_column(sa.Column('subnetpool_id', sa.String(length=36), nullable=True))
        batch.create_foreign_key(op.f('fk_subnets_subnetpool_id_subnet_pools'), 'subnet_pools',
                                 ['subnetpool_id'], ['id'], ondelete='RESTRICT')
        batch.create_index(op.f('ix_subnets_subnetpool_id'), ['subnetpool_id'])
    op.create_table(
        'routers',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('project_id', sa.String(length=36), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('description', sa.String(length=255), nullable=False),
        sa.Column('admin_state_up', sa.Boolean(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('external_network_id', sa.String(length=36), nullable=True),
        sa.Column('gateway_port_id', sa.String(length=36), nullable=True),
        sa.Column('enable_snat', sa.Boolean(), nullable=False),
        *_timestamps(),
        sa.ForeignKeyConstraint(['external_network_id'], ['networks.id'],
                                name=op.f('fk_routers_external_network_id_networks'), ondelete='RESTRICT'),
        sa.ForeignKeyConstraint(['gateway_port_id'], ['ports.id'],
                                name=op.f('fk_routers_gateway_port_id_ports'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_routers')),
    )
    op.create_index(op.f('ix_routers_project_id'), 'routers', ['project_id'])
    op.create_index(op.f('ix_routers_external_network_id'), 'routers', ['external_network_id'])
    op.create_table(
        'router_interfaces',
        sa.Column('port_id', sa.String(length=36), nullable=False),
        sa.Column('router_id', sa.String(length=36), nullable=False),
        sa.Column('subnet_id', sa.String(length=36), nullable=False),
        sa.Column('ip_address', sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(['port_id'], ['ports.id'], name=op.f('fk_router_interfaces_port_id_ports'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['router_id'], ['routers.id'], name=op.f('fk_router_interfaces_router_id_routers'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['subnet_id'], ['subnets.id'], name=op.f('fk_router_interfaces_subnet_id_subnets'),
                                ondelete='RESTRICT'),
        sa.PrimaryKeyConstraint('port_id', name=op.f('pk_router_interfaces')),
        sa.UniqueConstraint('subnet_id', name=op.f('uq_router_interfaces_subnet_id')),
    )
    op.create_index(op.f('ix_router_interfaces_router_id'), 'router_interfaces', ['router_id'])


def downgrade() -> None:
    # Tables go with their indexes (MariaDB refuses to drop an index a foreign key uses).
    op.drop_table('router_interfaces')
    op.drop_table('routers')
    with op.batch_alter_table('subnets') as batch:
        batch.drop_constraint(op.f('fk_subnets_subnetpool_id_subnet_pools'), type_='foreignkey')
        batch.drop_index(op.f('ix_subnets_subnetpool_id'))
        batch.drop_column('subnetpool_id')
    op.drop_column('subnets', 'dns_nameservers')
    op.drop_column('subnets', 'description')
    for table in ('ports', 'networks'):
        op.drop_column(table, 'admin_state_up')
        op.drop_column(table, 'description')
    op.drop_table('subnet_pools')
