"""expand: identity administration: domains, groups and memberships, role grants beyond
user-on-project, lock-out counters, the service catalog, application credentials

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05

Expand only: new tables, and new nullable or defaulted columns that the previous
release's workers ignore (tokens gain domain and system scope). Seeds the Default domain and the catalog fabric served
until now (its URLs as templates filled in when a token is issued).
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql')

#: What fabric's catalog held before this revision (fabric.api.identity_catalog.DEFAULT_SERVICES).
_SERVICES = (("identity", "keystone", "$(api_url)s/v3"), ("compute", "nova", "$(api_url)s/compute/v2.1"),
             ("image", "glance", "$(api_url)s/image"), ("network", "neutron", "$(api_url)s/networking"),
             ("s3", "fabric-objectstore", "$(objectstore_url)s"))


def _stamps():
    return [sa.Column('created_at', TIMESTAMP, nullable=False), sa.Column('updated_at', TIMESTAMP, nullable=True)]


def upgrade() -> None:
    domains = op.create_table(
        'domains',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('description', sa.String(length=255), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        *_stamps(),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_domains')),
        sa.UniqueConstraint('name', name=op.f('uq_domains_name')),
    )
    op.create_table(
        'identity_groups',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('domain_id', sa.String(length=64), nullable=False),
        sa.Column('description', sa.String(length=255), nullable=False),
        *_stamps(),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_identity_groups')),
        sa.UniqueConstraint('domain_id', 'name', name=op.f('uq_identity_groups_domain_id_name')),
    )
    op.create_table(
        'group_memberships',
        sa.Column('user_id', sa.String(length=36), nullable=False),
        sa.Column('group_id', sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_group_memberships_user_id_users'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['group_id'], ['identity_groups.id'],
                                name=op.f('fk_group_memberships_group_id_identity_groups'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('user_id', 'group_id', name=op.f('pk_group_memberships')),
    )
    op.create_index(op.f('ix_group_memberships_group_id'), 'group_memberships', ['group_id'], unique=False)
    op.create_table(
        'role_grants',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('actor_type', sa.String(length=8), nullable=False),
        sa.Column('actor_id', sa.String(length=255), nullable=False),
        sa.Column('target_type', sa.String(length=8), nullable=False),
        sa.Column('target_id', sa.String(length=64), nullable=False),
        sa.Column('role_id', sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(['role_id'], ['roles.id'], name=op.f('fk_role_grants_role_id_roles'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_role_grants')),
        sa.UniqueConstraint('actor_type', 'actor_id', 'target_type', 'target_id', 'role_id',
                            name=op.f('uq_role_grants_actor_type_actor_id_target_type_target_id_role_id')),
    )
    op.create_index(op.f('ix_role_grants_actor_id'), 'role_grants', ['actor_id'], unique=False)
    op.create_index(op.f('ix_role_grants_target_id'), 'role_grants', ['target_id'], unique=False)
    services = op.create_table(
        'catalog_services',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('type', sa.String(length=255), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('description', sa.String(length=255), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        *_stamps(),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_catalog_services')),
    )
    endpoints = op.create_table(
        'catalog_endpoints',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('service_id', sa.String(length=64), nullable=False),
        sa.Column('interface', sa.String(length=8), nullable=False),
        sa.Column('region_id', sa.String(length=255), nullable=True),
        sa.Column('url', sa.String(length=2048), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        *_stamps(),
        sa.ForeignKeyConstraint(['service_id'], ['catalog_services.id'],
                                name=op.f('fk_catalog_endpoints_service_id_catalog_services'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_catalog_endpoints')),
    )
    op.create_index(op.f('ix_catalog_endpoints_service_id'), 'catalog_endpoints', ['service_id'], unique=False)
    op.create_table(
        'application_credentials',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('description', sa.String(length=255), nullable=False),
        sa.Column('user_id', sa.String(length=36), nullable=False),
        sa.Column('project_id', sa.String(length=36), nullable=False),
        sa.Column('secret_hash', sa.String(length=255), nullable=False),
        sa.Column('expires_at', TIMESTAMP, nullable=True),
        sa.Column('unrestricted', sa.Boolean(), nullable=False),
        sa.Column('roles', sa.JSON(), nullable=False),
        *_stamps(),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_application_credentials_user_id_users'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['project_id'], ['projects.id'],
                                name=op.f('fk_application_credentials_project_id_projects'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_application_credentials')),
        sa.UniqueConstraint('user_id', 'name', name=op.f('uq_application_credentials_user_id_name')),
    )
    op.create_index(op.f('ix_application_credentials_user_id'), 'application_credentials', ['user_id'],
                    unique=False)
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('failed_auth_count', sa.Integer(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('failed_auth_at', TIMESTAMP, nullable=True))
    with op.batch_alter_table('tokens') as batch:
        batch.add_column(sa.Column('app_cred_id', sa.String(length=36), nullable=True))
        batch.add_column(sa.Column('domain_id', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('system', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.create_foreign_key(op.f('fk_tokens_app_cred_id_application_credentials'), 'application_credentials',
                                 ['app_cred_id'], ['id'], ondelete='CASCADE')

    now = sa.func.now()
    op.execute(domains.insert().values(id='default', name='Default', description='The default domain',
                                       enabled=True, created_at=now))
    for kind, name, url in _SERVICES:
        op.execute(services.insert().values(id=f'{kind}-service', type=kind, name=name, description='',
                                            enabled=True, created_at=now))
        op.execute(endpoints.insert().values(id=f'{kind}-public', service_id=f'{kind}-service', interface='public',
                                             region_id='RegionOne', url=url, enabled=True, created_at=now))


def downgrade() -> None:
    # Each table's indexes go with it (MariaDB refuses to drop one a foreign key needs).
    with op.batch_alter_table('tokens') as batch:
        batch.drop_constraint(op.f('fk_tokens_app_cred_id_application_credentials'), type_='foreignkey')
        batch.drop_column('app_cred_id')
        batch.drop_column('system')
        batch.drop_column('domain_id')
    with op.batch_alter_table('users') as batch:
        batch.drop_column('failed_auth_at')
        batch.drop_column('failed_auth_count')
    op.drop_table('application_credentials')
    op.drop_table('catalog_endpoints')
    op.drop_table('catalog_services')
    op.drop_table('role_grants')
    op.drop_table('group_memberships')
    op.drop_table('identity_groups')
    op.drop_table('domains')
