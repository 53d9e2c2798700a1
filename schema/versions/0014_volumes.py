"""expand: block storage: volumes, snapshots, their metadata and attachments

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05

Expand only: new tables the previous release's workers never touch. User metadata and the
image properties a volume was made from are JSON columns on their rows (one read, one
compare-and-swap), and ``volume_exports`` records each running qemu-nbd so that a
restarted volume worker and the reconcile command find them.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql')


def upgrade() -> None:
    op.create_table(
        'volumes',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('project_id', sa.String(length=36), nullable=False),
        sa.Column('user_id', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=True),
        sa.Column('description', sa.String(length=255), nullable=True),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=32), nullable=False),
        sa.Column('status_reason', sa.String(length=255), nullable=True),
        sa.Column('status_changed_at', TIMESTAMP, nullable=True),
        sa.Column('host', sa.String(length=255), nullable=True),
        sa.Column('availability_zone', sa.String(length=255), nullable=False),
        sa.Column('volume_type', sa.String(length=255), nullable=False),
        sa.Column('bootable', sa.Boolean(), nullable=False),
        sa.Column('multiattach', sa.Boolean(), nullable=False),
        sa.Column('source_volid', sa.String(length=36), nullable=True),
        sa.Column('snapshot_id', sa.String(length=36), nullable=True),
        sa.Column('image_id', sa.String(length=36), nullable=True),
        sa.Column('metadata_items', sa.JSON(), nullable=False),
        sa.Column('image_metadata', sa.JSON(), nullable=False),
        sa.Column('deleted_at', TIMESTAMP, nullable=True),
        sa.Column('created_at', TIMESTAMP, nullable=False),
        sa.Column('updated_at', TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_volumes')),
    )
    op.create_index(op.f('ix_volumes_project_id'), 'volumes', ['project_id'], unique=False)
    op.create_index(op.f('ix_volumes_status'), 'volumes', ['status'], unique=False)
    op.create_index(op.f('ix_volumes_host'), 'volumes', ['host'], unique=False)
    op.create_table(
        'volume_snapshots',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('volume_id', sa.String(length=36), nullable=False),
        sa.Column('project_id', sa.String(length=36), nullable=False),
        sa.Column('user_id', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=True),
        sa.Column('description', sa.String(length=255), nullable=True),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=32), nullable=False),
        sa.Column('status_reason', sa.String(length=255), nullable=True),
        sa.Column('status_changed_at', TIMESTAMP, nullable=True),
        sa.Column('metadata_items', sa.JSON(), nullable=False),
        sa.Column('deleted_at', TIMESTAMP, nullable=True),
        sa.Column('created_at', TIMESTAMP, nullable=False),
        sa.Column('updated_at', TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(['volume_id'], ['volumes.id'], name=op.f('fk_volume_snapshots_volume_id_volumes'),
                                ondelete='RESTRICT'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_volume_snapshots')),
    )
    op.create_index(op.f('ix_volume_snapshots_volume_id'), 'volume_snapshots', ['volume_id'], unique=False)
    op.create_index(op.f('ix_volume_snapshots_project_id'), 'volume_snapshots', ['project_id'], unique=False)
    op.create_index(op.f('ix_volume_snapshots_status'), 'volume_snapshots', ['status'], unique=False)
    op.create_table(
        'volume_attachments',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('volume_id', sa.String(length=36), nullable=False),
        sa.Column('instance_uuid', sa.String(length=36), nullable=False),
        sa.Column('attached_host', sa.String(length=255), nullable=True),
        sa.Column('device', sa.String(length=64), nullable=True),
        sa.Column('connection_info', sa.JSON(), nullable=True),
        sa.Column('connector', sa.JSON(), nullable=True),
        sa.Column('status', sa.String(length=32), nullable=False),
        sa.Column('boot_index', sa.Integer(), nullable=True),
        sa.Column('delete_on_termination', sa.Boolean(), nullable=False),
        sa.Column('created_at', TIMESTAMP, nullable=False),
        sa.Column('updated_at', TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(['volume_id'], ['volumes.id'], name=op.f('fk_volume_attachments_volume_id_volumes'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_volume_attachments')),
        sa.UniqueConstraint('volume_id', 'instance_uuid', name=op.f('uq_volume_attachments_volume_id_instance_uuid')),
    )
    op.create_index(op.f('ix_volume_attachments_volume_id'), 'volume_attachments', ['volume_id'], unique=False)
    op.create_index(op.f('ix_volume_attachments_instance_uuid'), 'volume_attachments', ['instance_uuid'],
                    unique=False)
    op.create_table(
        'volume_exports',
        sa.Column('volume_id', sa.String(length=36), nullable=False),
        sa.Column('host', sa.String(length=255), nullable=False),
        sa.Column('address', sa.String(length=64), nullable=False),
        sa.Column('port', sa.Integer(), nullable=False),
        sa.Column('export_name', sa.String(length=64), nullable=False),
        sa.Column('pid', sa.Integer(), nullable=True),
        sa.Column('shared', sa.Integer(), nullable=False),
        sa.Column('created_at', TIMESTAMP, nullable=False),
        sa.Column('updated_at', TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(['volume_id'], ['volumes.id'], name=op.f('fk_volume_exports_volume_id_volumes'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('volume_id', name=op.f('pk_volume_exports')),
    )
    op.create_index(op.f('ix_volume_exports_host'), 'volume_exports', ['host'], unique=False)
    _add_to_catalog()


#: The catalog entries of the Block Storage API (fabric.api.identity_catalog.DEFAULT_SERVICES).
_SERVICES = (("block-storage", "cinder", "$(api_url)s/volume/v3"), ("volumev3", "cinderv3", "$(api_url)s/volume/v3"))


def _add_to_catalog() -> None:
    """Add Block Storage to a catalog that still has fabric's seeded compute endpoint (an
    operator's own catalog, or one made later by bootstrap's seed, is left alone), in its region."""
    bind = op.get_bind()
    services, endpoints = sa.table('catalog_services', *[sa.column(c) for c in (
        'id', 'type', 'name', 'description', 'enabled', 'created_at')]), sa.table('catalog_endpoints', *[
            sa.column(c) for c in ('id', 'service_id', 'interface', 'region_id', 'url', 'enabled', 'created_at')])
    region = bind.execute(sa.select(endpoints.c.region_id).where(endpoints.c.id == 'compute-public')).first()
    if region is None:
        return
    now = sa.func.now()
    for kind, name, url in _SERVICES:
        if bind.execute(sa.select(services.c.id).where(services.c.id == f'{kind}-service')).first() is not None:
            continue
        op.execute(services.insert().values(id=f'{kind}-service', type=kind, name=name, description='',
                                            enabled=True, created_at=now))
        op.execute(endpoints.insert().values(id=f'{kind}-public', service_id=f'{kind}-service', interface='public',
                                             region_id=region[0], url=url, enabled=True, created_at=now))


def downgrade() -> None:
    for kind, _, _ in _SERVICES:
        op.execute(sa.text("DELETE FROM catalog_services WHERE id = :id").bindparams(id=f'{kind}-service'))
    op.drop_table('volume_exports')
    op.drop_table('volume_attachments')
    op.drop_table('volume_snapshots')
    op.drop_table('volumes')
