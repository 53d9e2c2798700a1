"""expand: services: the fanout messages a worker dropped

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07

Expand only: nullable columns the previous release's workers never touch. A refused or
failed message on a fanout queue (transient, exclusive) has no dead-letter queue to go to:
the worker drops it. Each worker now counts those drops by reason code and writes the counts
(``fanout_drops``, a JSON object) and the time of the last (``fanout_dropped_at``) with its
heartbeat, so ``fabric-manage status`` can name them as it names dead letters. Registration
resets both: the counts are the running process's.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql')


def upgrade() -> None:
    op.add_column('services', sa.Column('fanout_drops', sa.JSON(), nullable=True))
    op.add_column('services', sa.Column('fanout_dropped_at', TIMESTAMP, nullable=True))


def downgrade() -> None:
    op.drop_column('services', 'fanout_dropped_at')
    op.drop_column('services', 'fanout_drops')
