"""objectstore: EC2 credentials, buckets, objects, multipart uploads and parts

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql')
KEY = sa.LargeBinary(length=1024).with_variant(mysql.VARBINARY(length=1024), 'mariadb').with_variant(
    mysql.VARBINARY(length=1024), 'mysql')


def upgrade() -> None:
    op.create_table(
        'ec2_credentials',
        sa.Column('access', sa.String(length=64), nullable=False),
        sa.Column('secret', sa.String(length=64), nullable=False),
        sa.Column('user_id', sa.String(length=36), nullable=False),
        sa.Column('project_id', sa.String(length=36), nullable=False),
        sa.Column('created_at', TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_ec2_credentials_project_id_projects'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_ec2_credentials_user_id_users'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('access', name=op.f('pk_ec2_credentials')),
    )
    op.create_index(op.f('ix_ec2_credentials_user_id'), 'ec2_credentials', ['user_id'], unique=False)
    op.create_table(
        's3_buckets',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('name', sa.String(length=63), nullable=False),
        sa.Column('project_id', sa.String(length=36), nullable=False),
        sa.Column('owner_id', sa.String(length=36), nullable=False),
        sa.Column('acl', sa.String(length=32), nullable=False),
        sa.Column('created_at', TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_s3_buckets_project_id_projects'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_s3_buckets')),
        sa.UniqueConstraint('name', name=op.f('uq_s3_buckets_name')),
    )
    op.create_index(op.f('ix_s3_buckets_project_id'), 's3_buckets', ['project_id'], unique=False)
    op.create_table(
        's3_objects',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('bucket_id', sa.String(length=36), nullable=False),
        sa.Column('key', KEY, nullable=False),
        sa.Column('blob', sa.String(length=36), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('etag', sa.String(length=64), nullable=False),
        sa.Column('content_type', sa.String(length=255), nullable=False),
        sa.Column('meta', sa.JSON(), nullable=False),
        sa.Column('checksum_algorithm', sa.String(length=16), nullable=True),
        sa.Column('checksum_value', sa.String(length=128), nullable=True),
        sa.Column('checksum_type', sa.String(length=16), nullable=True),
        sa.Column('last_modified', TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(['bucket_id'], ['s3_buckets.id'], name=op.f('fk_s3_objects_bucket_id_s3_buckets'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_s3_objects')),
        sa.UniqueConstraint('bucket_id', 'key', name=op.f('uq_s3_objects_bucket_id_key')),
    )
    op.create_table(
        's3_uploads',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('bucket_id', sa.String(length=36), nullable=False),
        sa.Column('key', KEY, nullable=False),
        sa.Column('owner_id', sa.String(length=36), nullable=False),
        sa.Column('content_type', sa.String(length=255), nullable=False),
        sa.Column('meta', sa.JSON(), nullable=False),
        sa.Column('checksum_algorithm', sa.String(length=16), nullable=True),
        sa.Column('checksum_type', sa.String(length=16), nullable=True),
        sa.Column('initiated', TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(['bucket_id'], ['s3_buckets.id'], name=op.f('fk_s3_uploads_bucket_id_s3_buckets'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_s3_uploads')),
    )
    op.create_index('ix_s3_uploads_bucket_key', 's3_uploads', ['bucket_id', 'key'], unique=False)
    op.create_table(
        's3_parts',
        sa.Column('upload_id', sa.String(length=64), nullable=False),
        sa.Column('part_number', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('blob', sa.String(length=36), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('etag', sa.String(length=64), nullable=False),
        sa.Column('checksum_value', sa.String(length=128), nullable=True),
        sa.Column('last_modified', TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(['upload_id'], ['s3_uploads.id'], name=op.f('fk_s3_parts_upload_id_s3_uploads'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('upload_id', 'part_number', name=op.f('pk_s3_parts')),
    )


def downgrade() -> None:
    # Dropping a table drops its indexes (MariaDB refuses to drop one a foreign key still uses).
    op.drop_table('s3_parts')
    op.drop_table('s3_uploads')
    op.drop_table('s3_objects')
    op.drop_table('s3_buckets')
    op.drop_table('ec2_credentials')
