"""expand: network: IPv6 subnet address and router-advertisement modes

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05

Expand only: new tables and nullable columns the previous release's workers never touch.
Reserved in order so that work on three areas at once gets one linear history. Two nullable
columns of subnets: an IPv6 subnet's address mode and router-advertisement mode.
"""

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('subnets', sa.Column('ipv6_address_mode', sa.String(length=16), nullable=True))
    op.add_column('subnets', sa.Column('ipv6_ra_mode', sa.String(length=16), nullable=True))


def downgrade() -> None:
    op.drop_column('subnets', 'ipv6_ra_mode')
    op.drop_column('subnets', 'ipv6_address_mode')
