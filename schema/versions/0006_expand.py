"""expand branch: where migrations that the previous release's workers survive begin

Revision ID: 0006_expand
Revises: 0005
Create Date: 2026-12-05

From here on a migration is either an expand one (chained on this branch) or a contract one
(chained on 0006_contract); see fabric/db/migration.py.
"""

revision = '0006_expand'
down_revision = '0005'
branch_labels = ('expand',)
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
