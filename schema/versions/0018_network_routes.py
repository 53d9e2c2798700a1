"""expand: network: subnet host routes and router extra routes

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06

Expand only: two nullable columns the previous release's workers never touch. A subnet's
host routes ([{destination, nexthop}], handed to guests by DHCP) and a router's extra routes
(the same shape, each next hop inside one of the router's subnets).
"""

import sqlalchemy as sa
from alembic import op

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('subnets', sa.Column('host_routes', sa.JSON(), nullable=True))
    op.add_column('routers', sa.Column('routes', sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column('routers', 'routes')
    op.drop_column('subnets', 'host_routes')
