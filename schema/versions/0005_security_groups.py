"""security groups: groups, rules, port membership

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql')


def upgrade() -> None:
    op.create_table(
        'security_groups',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('project_id', sa.String(length=36), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('description', sa.String(length=255), nullable=False),
        sa.Column('default_for', sa.String(length=36), nullable=True),
        sa.Column('created_at', TIMESTAMP, nullable=False),
        sa.Column('updated_at', TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_security_groups')),
        sa.UniqueConstraint('default_for', name=op.f('uq_security_groups_default_for')),
    )
    op.create_index(op.f('ix_security_groups_project_id'), 'security_groups', ['project_id'], unique=False)
    op.create_table(
        'security_group_rules',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('security_group_id', sa.String(length=36), nullable=False),
        sa.Column('project_id', sa.String(length=36), nullable=False),
        sa.Column('direction', sa.String(length=8), nullable=False),
        sa.Column('ethertype', sa.String(length=8), nullable=False),
        sa.Column('protocol', sa.String(length=16), nullable=True),
        sa.Column('port_range_min', sa.Integer(), nullable=True),
        sa.Column('port_range_max', sa.Integer(), nullable=True),
        sa.Column('remote_ip_prefix', sa.String(length=64), nullable=True),
        sa.Column('remote_group_id', sa.String(length=36), nullable=True),
        sa.Column('description', sa.String(length=255), nullable=False),
        sa.Column('created_at', TIMESTAMP, nullable=False),
        sa.Column('updated_at', TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(['security_group_id'], ['security_groups.id'],
                                name=op.f('fk_security_group_rules_security_group_id_security_groups'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['remote_group_id'], ['security_groups.id'],
                                name=op.f('fk_security_group_rules_remote_group_id_security_groups'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_security_group_rules')),
    )
    op.create_index(op.f('ix_security_group_rules_security_group_id'), 'security_group_rules',
                    ['security_group_id'], unique=False)
    op.create_index(op.f('ix_security_group_rules_remote_group_id'), 'security_group_rules',
                    ['remote_group_id'], unique=False)
    op.create_table(
        'port_security_groups',
        sa.Column('port_id', sa.String(length=36), nullable=False),
        sa.Column('security_group_id', sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(['port_id'], ['ports.id'], name=op.f('fk_port_security_groups_port_id_ports'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['security_group_id'], ['security_groups.id'],
                                name=op.f('fk_port_security_groups_security_group_id_security_groups'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('port_id', 'security_group_id', name=op.f('pk_port_security_groups')),
    )
    op.create_index(op.f('ix_port_security_groups_security_group_id'), 'port_security_groups',
                    ['security_group_id'], unique=False)


def downgrade() -> None:
    # Dropping a table drops its indexes; MariaDB refuses to drop an index a foreign key needs first.
    op.drop_table('port_security_groups')
    op.drop_table('security_group_rules')
    op.drop_table('security_groups')
