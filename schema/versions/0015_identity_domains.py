"""expand: identity: domain configuration, domain-specific roles, projects acting as domains

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05

Expand only: a new table (``domain_configs``), new columns with defaults the previous release's
workers never set (``roles.domain_id``, ``projects.is_domain``), and role names unique per
domain (a global role keeps ``domain_id`` '', so the previous release's creates keep their
meaning). The cloud-wide uniqueness of role names stays until the contract migration
``0015_contract`` drops it: a worker of the previous release finds roles by name alone.

SQLite cannot add a UNIQUE constraint to a table, so there ``roles`` is rebuilt beside the old
one and swapped in (fabric.db.sqlite_swap: no ON DELETE CASCADE fires).
"""

import sqlalchemy as sa
from alembic import op

from fabric.db.sqlite_swap import swap_table

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

#: SQLite's roles with domain_id, names unique per domain and (until 0015_contract) cloud-wide.
SQLITE_ROLES_WITH_DOMAINS = (
    "CREATE TABLE roles_new (id VARCHAR(36) NOT NULL, name VARCHAR(64) NOT NULL, "
    "domain_id VARCHAR(64) DEFAULT '' NOT NULL, CONSTRAINT pk_roles PRIMARY KEY (id), "
    "CONSTRAINT uq_roles_name UNIQUE (name), CONSTRAINT uq_roles_domain_id_name UNIQUE (domain_id, name))")


def upgrade() -> None:
    op.create_table(
        'domain_configs',
        sa.Column('domain_id', sa.String(length=64), nullable=False),
        sa.Column('group', sa.String(length=64), nullable=False),
        sa.Column('option', sa.String(length=64), nullable=False),
        sa.Column('value', sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(['domain_id'], ['domains.id'], name=op.f('fk_domain_configs_domain_id_domains'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('domain_id', 'group', 'option', name=op.f('pk_domain_configs')),
    )
    op.add_column('projects', sa.Column('is_domain', sa.Boolean(), server_default=sa.false(), nullable=False))
    if op.get_bind().dialect.name == 'sqlite':
        swap_table(op.get_bind(), 'roles', SQLITE_ROLES_WITH_DOMAINS,
                   "INSERT INTO roles_new (id, name, domain_id) SELECT id, name, '' FROM roles")
    else:
        op.add_column('roles', sa.Column('domain_id', sa.String(length=64), server_default='', nullable=False))
        op.create_unique_constraint(op.f('uq_roles_domain_id_name'), 'roles', ['domain_id', 'name'])


def downgrade() -> None:
    # Domain roles cannot outlive per-domain names: they go, with their grants.
    op.execute(sa.text("DELETE FROM roles WHERE domain_id != ''"))
    if op.get_bind().dialect.name == 'sqlite':
        swap_table(op.get_bind(), 'roles',
                   "CREATE TABLE roles_new (id VARCHAR(36) NOT NULL, name VARCHAR(64) NOT NULL, "
                   "CONSTRAINT pk_roles PRIMARY KEY (id), CONSTRAINT uq_roles_name UNIQUE (name))",
                   "INSERT INTO roles_new (id, name) SELECT id, name FROM roles")
    else:
        op.drop_constraint(op.f('uq_roles_domain_id_name'), 'roles', type_='unique')
        op.drop_column('roles', 'domain_id')
    op.drop_column('projects', 'is_domain')  # SQLite drops a plain column in place (no rebuild)
    op.drop_table('domain_configs')

