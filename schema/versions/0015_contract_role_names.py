"""contract: role names unique per domain only (the cloud-wide uniqueness 0015 kept goes)

Revision ID: 0015_contract
Revises: 0006_contract
Depends on: 0015
Create Date: 2026-12-06

A worker of the release before 0015 finds roles by name alone, so while one may run, a role
name stays unique cloud-wide; once every worker runs this release, a domain may have a role
named as a global one or as another domain's. Downgrading deletes the domain roles (with their
grants): with cloud-wide names they could collide.
"""

import sqlalchemy as sa
from alembic import op

from fabric.db.sqlite_swap import swap_table

revision = '0015_contract'
down_revision = '0006_contract'
branch_labels = None
depends_on = '0015'

_COPY = "INSERT INTO roles_new (id, name, domain_id) SELECT id, name, domain_id FROM roles"


def upgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        swap_table(op.get_bind(), 'roles',
                   "CREATE TABLE roles_new (id VARCHAR(36) NOT NULL, name VARCHAR(64) NOT NULL, "
                   "domain_id VARCHAR(64) DEFAULT '' NOT NULL, CONSTRAINT pk_roles PRIMARY KEY (id), "
                   "CONSTRAINT uq_roles_domain_id_name UNIQUE (domain_id, name))", _COPY)
    else:
        op.drop_constraint(op.f('uq_roles_name'), 'roles', type_='unique')


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM roles WHERE domain_id != ''"))
    if op.get_bind().dialect.name == 'sqlite':
        swap_table(op.get_bind(), 'roles',
                   "CREATE TABLE roles_new (id VARCHAR(36) NOT NULL, name VARCHAR(64) NOT NULL, "
                   "domain_id VARCHAR(64) DEFAULT '' NOT NULL, CONSTRAINT pk_roles PRIMARY KEY (id), "
                   "CONSTRAINT uq_roles_name UNIQUE (name), CONSTRAINT uq_roles_domain_id_name "
                   "UNIQUE (domain_id, name))", _COPY)
    else:
        op.create_unique_constraint(op.f('uq_roles_name'), 'roles', ['name'])
