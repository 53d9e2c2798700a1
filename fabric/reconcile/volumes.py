"""Volumes: one volume host's files and NBD exports against the database.

- stale: an attached (or attaching) volume of this host whose export is not running
  (qemu-nbd died, the host rebooted); a live volume whose file is missing;
- orphan: a running export of a volume no attachment needs (the detach's unexport
  was lost); a volume file of no live volume of this host.

Fixes, through the worker's own export and driver calls: a missing export is started
again (on its recorded port when free; the attachments' connection_info follows a
new port); an export nobody needs is stopped (its recorded pid only); an orphan file
is removed; a volume whose file is gone goes to ``error`` with the reason (by
compare-and-swap from the status seen).
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from fabric.db import Database
from fabric.db.models import Volume, VolumeAttachment
from fabric.exception import FabricError
from fabric.reconcile import ORPHAN, STALE, Finding, Fixes
from fabric.volume import states
from fabric.volume.exports import connection_info

LOG = logging.getLogger(__name__)

#: Volume statuses whose file must exist.
_HAS_FILE = (states.AVAILABLE, states.RESERVED, states.ATTACHING, states.IN_USE, states.DETACHING,
             states.EXTENDING, states.ERROR_EXTENDING, states.UPLOADING)


def _fix(finding: Finding, repair: Any) -> None:
    try:
        repair()
        finding.fixed = True
    except (FabricError, OSError) as error:  # a failed repair is reported, the others still run
        finding.error = getattr(error, "message", None) or f"{type(error).__name__}: {error}"


def reconcile(db: Database, host: str, driver: Any, exports: Any, fixes: Fixes) -> list[Finding]:
    """The drift of ``host`` (see the module docstring), repairing what ``fixes`` names."""
    with db.begin() as session:
        volumes = {row.id: (row.status, row.multiattach) for row in session.scalars(
            sa.select(Volume).where(Volume.host == host, Volume.status != states.DELETED))}
        needed: dict[str, list[str]] = {}
        for volume_id, attachment_id in session.execute(
                sa.select(VolumeAttachment.volume_id, VolumeAttachment.id)
                .join(Volume, Volume.id == VolumeAttachment.volume_id)
                .where(Volume.host == host, VolumeAttachment.connection_info.is_not(None))):
            needed.setdefault(volume_id, []).append(attachment_id)
    findings: list[Finding] = []
    records = {export["volume_id"]: export for export in exports.records()}

    for volume_id, export in sorted(records.items()):
        if volume_id in needed:
            continue
        running = exports.is_running(export, driver.path(volume_id))
        finding = Finding(ORPHAN, "export", volume_id, f"qemu-nbd on port {export['port']} "
                          f"({'running, pid ' + str(export['pid']) if running else 'not running'}) serves "
                          "no attachment", host)
        if fixes.wants(ORPHAN):
            _fix(finding, lambda v=volume_id: exports.stop(v, driver.path(v)))
        findings.append(finding)

    for volume_id, attachment_ids in sorted(needed.items()):
        export = records.get(volume_id)
        if export is not None and exports.is_running(export, driver.path(volume_id)):
            continue
        finding = Finding(STALE, "export", volume_id, f"attached ({len(attachment_ids)} attachment(s)) but its "
                          "export is not running", host)
        if fixes.wants(STALE):
            def restart(v: str = volume_id, ids: list[str] = attachment_ids) -> None:
                started = exports.ensure(v, driver.path(v), multiattach=volumes.get(v, ("", False))[1])
                with db.begin() as session:
                    session.execute(sa.update(VolumeAttachment).where(VolumeAttachment.id.in_(ids))
                                    .values(connection_info=connection_info(started)))
            _fix(finding, restart)
        findings.append(finding)

    for volume_id, (status, _) in sorted(volumes.items()):
        if status in _HAS_FILE and not driver.exists(volume_id):
            finding = Finding(STALE, "volume", volume_id, f"{status} but its file {driver.path(volume_id)} is "
                              "missing", host)
            if fixes.wants(STALE):
                def mark(v: str = volume_id, seen: str = status) -> None:
                    with db.begin() as session:
                        states.swap(session, Volume, v, seen, states.ERROR,
                                    status_reason="its file is missing on the volume host (reconcile)")
                _fix(finding, mark)
            findings.append(finding)

    if driver.root.is_dir():
        for path in sorted(driver.root.glob("volume-*.qcow2")):
            volume_id = path.name.removeprefix("volume-").removesuffix(".qcow2")
            if volume_id in volumes:
                continue
            finding = Finding(ORPHAN, "volume-file", volume_id, f"{path} belongs to no live volume of this host",
                              host)
            if fixes.wants(ORPHAN):
                _fix(finding, lambda p=path: p.unlink(missing_ok=True))
            findings.append(finding)
    return findings
