"""expand: a server's lock (server lock / unlock): locked, locked_by, locked_reason

Revision ID: 0007
Revises: 0006_expand
Create Date: 2026-12-05

Expand only: new nullable or defaulted columns that the previous release's workers ignore.
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006_expand'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('instances', sa.Column('locked', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column('instances', sa.Column('locked_by', sa.String(length=16), nullable=True))
    op.add_column('instances', sa.Column('locked_reason', sa.String(length=255), nullable=True))


def downgrade() -> None:
    op.drop_column('instances', 'locked_reason')
    op.drop_column('instances', 'locked_by')
    op.drop_column('instances', 'locked')
