"""expand: compute: access addresses and flavor descriptions

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06

Expand only: new tables and nullable columns the previous release's workers never touch.
Reserved in order so that work on three areas at once gets one linear history. A server's
access addresses (accessIPv4/accessIPv6, as its owner set them at create, update or
rebuild) and a flavor's description (Compute 2.55).
"""

import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('instances', sa.Column('access_ip_v4', sa.String(length=39), nullable=True))
    op.add_column('instances', sa.Column('access_ip_v6', sa.String(length=39), nullable=True))
    op.add_column('flavors', sa.Column('description', sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column('flavors', 'description')
    op.drop_column('instances', 'access_ip_v6')
    op.drop_column('instances', 'access_ip_v4')
