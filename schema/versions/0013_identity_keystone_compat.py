"""expand: regions, endpoint groups, users' extra attributes, implied roles, project tags and parents (a table of their own: SQLite cannot ALTER a
foreign key into ``projects``), policy blobs, token
methods, ids for EC2 credentials (what Keystone's clients and tempest's identity tests use)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05

Expand only: new tables and nullable columns the previous release's workers never touch.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql')


def upgrade() -> None:
    op.create_table(
        'regions',
        sa.Column('id', sa.String(length=255), nullable=False),
        sa.Column('description', sa.String(length=255), nullable=False),
        sa.Column('parent_region_id', sa.String(length=255), nullable=True),
        sa.Column('created_at', TIMESTAMP, nullable=False),
        sa.Column('updated_at', TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(['parent_region_id'], ['regions.id'], name=op.f('fk_regions_parent_region_id_regions'),
                                ondelete='RESTRICT'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_regions')),
    )
    op.create_index(op.f('ix_regions_parent_region_id'), 'regions', ['parent_region_id'], unique=False)
    op.add_column('users', sa.Column('extra', sa.JSON(), nullable=True))
    op.create_table(
        'project_parents',
        sa.Column('project_id', sa.String(length=36), nullable=False),
        sa.Column('parent_id', sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(['parent_id'], ['projects.id'], name=op.f('fk_project_parents_parent_id_projects'),
                                ondelete='RESTRICT'),
        sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_project_parents_project_id_projects'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('project_id', name=op.f('pk_project_parents')),
    )
    op.create_index(op.f('ix_project_parents_parent_id'), 'project_parents', ['parent_id'], unique=False)
    op.create_table(
        'project_tags',
        sa.Column('project_id', sa.String(length=36), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_project_tags_project_id_projects'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('project_id', 'name', name=op.f('pk_project_tags')),
    )
    op.create_table(
        'policy_blobs',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('type', sa.String(length=255), nullable=False),
        sa.Column('blob', sa.Text(), nullable=False),
        sa.Column('created_at', TIMESTAMP, nullable=False),
        sa.Column('updated_at', TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_policy_blobs')),
    )
    op.create_table(
        'implied_roles',
        sa.Column('prior_role_id', sa.String(length=36), nullable=False),
        sa.Column('implied_role_id', sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(['implied_role_id'], ['roles.id'], name=op.f('fk_implied_roles_implied_role_id_roles'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['prior_role_id'], ['roles.id'], name=op.f('fk_implied_roles_prior_role_id_roles'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('prior_role_id', 'implied_role_id', name=op.f('pk_implied_roles')),
    )
    op.create_table(
        'endpoint_groups',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('description', sa.String(length=255), nullable=False),
        sa.Column('filters', sa.JSON(), nullable=False),
        sa.Column('created_at', TIMESTAMP, nullable=False),
        sa.Column('updated_at', TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_endpoint_groups')),
    )
    op.create_table(
        'project_endpoint_groups',
        sa.Column('endpoint_group_id', sa.String(length=64), nullable=False),
        sa.Column('project_id', sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(['endpoint_group_id'], ['endpoint_groups.id'],
                                name=op.f('fk_project_endpoint_groups_endpoint_group_id_endpoint_groups'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['project_id'], ['projects.id'],
                                name=op.f('fk_project_endpoint_groups_project_id_projects'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('endpoint_group_id', 'project_id', name=op.f('pk_project_endpoint_groups')),
    )
    op.create_index(op.f('ix_project_endpoint_groups_project_id'), 'project_endpoint_groups', ['project_id'],
                    unique=False)
    op.add_column('tokens', sa.Column('methods', sa.String(length=255), nullable=True))
    op.add_column('ec2_credentials', sa.Column('credential_id', sa.String(length=64), nullable=True))
    op.create_index(op.f('ix_ec2_credentials_credential_id'), 'ec2_credentials', ['credential_id'], unique=True)


def downgrade() -> None:
    op.drop_index(op.f('ix_ec2_credentials_credential_id'), table_name='ec2_credentials')
    op.drop_column('ec2_credentials', 'credential_id')
    op.drop_column('tokens', 'methods')
    op.drop_table('project_endpoint_groups')
    op.drop_table('endpoint_groups')
    op.drop_table('implied_roles')
    op.drop_table('policy_blobs')
    op.drop_table('project_tags')
    op.drop_table('project_parents')
    op.drop_column('users', 'extra')
    op.drop_table('regions')
