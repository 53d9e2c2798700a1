"""contract branch: where migrations applied after every worker runs the new release begin

Revision ID: 0006_contract
Revises: 0005
Create Date: 2026-12-05
"""

revision = '0006_contract'
down_revision = '0005'
branch_labels = ('contract',)
depends_on = '0006_expand'


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
