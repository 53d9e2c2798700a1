"""expand: images: the lease of an upload through the API

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06

Expand only: a nullable column the previous release's workers never touch. While the API
streams an upload into an image (``saving``), it keeps ``upload_expires_at`` a lease ahead; an
upload whose API process died lets it lapse, and the image goes back to ``queued`` (the API's
reaper), or a new upload takes it over. Images filled by other writers (a compute snapshot, a
volume upload) leave it NULL: their workers end what they started.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql')


def upgrade() -> None:
    op.add_column('images', sa.Column('upload_expires_at', TIMESTAMP, nullable=True))


def downgrade() -> None:
    op.drop_column('images', 'upload_expires_at')
