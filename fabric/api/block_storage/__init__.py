"""Block Storage v3 (Cinder's API), the subset the ``openstack`` CLI and openstacksdk use.

Mounted at ``/volume``: versions at ``/volume`` and ``/volume/v3``, every resource
under ``/volume/v3`` (the catalog's ``block-storage``/``volumev3`` endpoint, without
a project id, as Cinder allows since 3.67). The work is :class:`fabric.volume.api.VolumeService`'s;
these modules parse, check the caller, and render Cinder's documents and errors
(``{"itemNotFound": {"code": 404, "message": ...}}``).
"""

from __future__ import annotations

import falcon

from fabric.api.block_storage import catalogue, snapshots, volumes
from fabric.api.block_storage.common import PREFIX, ROOT


def register(app: falcon.App) -> None:
    catalogue.register(app, ROOT, PREFIX)
    volumes.register(app, PREFIX)
    snapshots.register(app, PREFIX)
