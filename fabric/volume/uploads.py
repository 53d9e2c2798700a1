"""A volume's bytes as a new image (Cinder's ``os-volume_upload_image``, what
``openstack image create --volume`` sends).

The API's half (:meth:`fabric.volume.api.VolumeService.upload_to_image`) checks the
request (:func:`check_request`), moves the volume available (in-use with ``force``)
-> uploading and writes the queued image row (:func:`queued_image`) in one
transaction, then casts to the volume's host. The worker's half (:func:`upload`)
writes the volume's current bytes in the image's disk format with ``qemu-img
convert`` and stores them exactly as a server snapshot's disk is stored (the
compute hosts' :class:`fabric.compute.collaborators.ObjectstoreDisks.put_image`,
which is the Image API's own upload, :func:`fabric.api.image_store.write`): the
image goes queued -> saving -> active with its size and checksums. The volume then
rests again where its attachments say (:func:`fabric.volume.states.settle`: in-use
while attached, else available), also after a failure, which kills the image and
names the reason in the volume's ``status_reason`` (Cinder puts the volume back the
same way and drops the image).

An in-use volume is read while its guest may write (shared access, as a forced
snapshot): the image is crash-consistent only if the guest is quiet meanwhile.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa

from fabric.db import Database
from fabric.db.models import Image, Volume
from fabric.exception import Forbidden, Invalid, NotFound, ObjectstoreError

LOG = logging.getLogger(__name__)

#: Image disk formats a volume can be uploaded as (Cinder's list), and qemu-img's name of each.
DISK_FORMATS = {"raw": "raw", "qcow2": "qcow2", "vmdk": "vmdk", "vdi": "vdi", "vhd": "vpc", "vhdx": "vhdx"}
#: Container formats the image may be labelled with (the bytes are the disk itself either way).
CONTAINER_FORMATS = ("bare", "ovf")
VISIBILITIES = ("private", "shared", "community", "public")
#: Keys of a volume's image metadata that are the source image's own attributes, not properties
#: to carry over (Cinder's glance_core_properties, plus what fabric records beside them).
_CORE_METADATA = {"image_id", "image_name", "name", "disk_format", "container_format", "min_disk", "min_ram",
                  "size", "checksum", "os_hash_algo", "os_hash_value"}
#: Image statuses an upload may (still) write to: a redelivered upload finds ``saving``.
_WRITABLE = ("queued", "saving")


class ImageDisks(Protocol):
    """Where an image's data goes (:class:`fabric.compute.collaborators.ObjectstoreDisks`)."""

    def put_image(self, image_id: str, path: str) -> dict: ...


def check_request(args: dict[str, Any], *, is_admin: bool) -> dict[str, Any]:
    """The upload's parameters from Cinder's body (``image_name`` required; ``disk_format`` raw,
    ``container_format`` bare, ``visibility`` private, ``force`` and ``protected`` false by default).
    Invalid naming the bad value; Forbidden for a public image asked by a non-admin."""
    name = args.get("image_name")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 255:
        raise Invalid(reason=f"image_name {name!r} must be a non-blank string of at most 255 characters")
    chosen = {"image_name": name, "disk_format": args.get("disk_format") or "raw",
              "container_format": args.get("container_format") or "bare",
              "visibility": args.get("visibility") or "private"}
    for key, accepted in (("disk_format", tuple(DISK_FORMATS)), ("container_format", CONTAINER_FORMATS),
                          ("visibility", VISIBILITIES)):
        if chosen[key] not in accepted:
            raise Invalid(reason=f"{key} {chosen[key]!r} is not accepted; accepted: {', '.join(accepted)}")
    for key in ("force", "protected"):
        value = args.get(key, False)
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            value = value.strip().lower() in ("true", "1", "yes", "on")
        if not isinstance(value, bool):
            raise Invalid(reason=f"{key} {value!r} is not a boolean (true or false)")
        chosen[key] = value
    if chosen["visibility"] == "public" and not is_admin:
        raise Forbidden(reason="only an admin may make an image public (visibility 'public')")
    return chosen


def queued_image(session: Any, volume: Volume, request: dict[str, Any]) -> Image:
    """The queued image of the volume's project that the upload fills (added to ``session``): the
    request's name, formats and visibility, the properties of the volume's source image carried
    over (as Cinder does), and a min_disk of the volume's size (its disk is that big)."""
    metadata = dict(volume.image_metadata or {})
    properties: dict[str, Any] = {key: value for key, value in metadata.items()
                                  if key not in _CORE_METADATA and not key.startswith("__")}
    properties.update({"__tags": [], "__protected": request["protected"], "__os_hidden": False})
    min_ram = metadata.get("min_ram", "0")
    image = Image(name=request["image_name"], owner=volume.project_id, status="queued",
                  visibility=request["visibility"], disk_format=request["disk_format"],
                  container_format=request["container_format"], min_disk=volume.size,
                  min_ram=int(min_ram) if str(min_ram).isdigit() else 0, properties=properties)
    session.add(image)
    session.flush()
    return image


def abandon(db: Database, image_id: str) -> None:
    """Kill the image if it is still waiting for data (an upload that will not happen)."""
    with db.begin() as session:
        session.execute(sa.update(Image).where(Image.id == image_id, Image.status.in_(_WRITABLE))
                        .values(status="killed"))


def upload(db: Database, driver: Any, disks: ImageDisks, volume_id: str, image_id: str,
           remove_data: Any = None) -> None:
    """Fill image ``image_id`` (queued, or saving after a worker died mid-upload) with volume
    ``volume_id``'s bytes in the image's disk format, and make it active. Nothing when the image
    is active already (a redelivered message). NotFound when the image is gone or killed; the
    driver's and the objectstore's errors otherwise (the image then stays saving: the caller
    kills it). An image deleted during the upload has its data removed by ``remove_data(id)``."""
    with db.begin() as session:
        image = session.get(Image, image_id)
        if image is not None and image.status == "active":
            return
        if image is None or image.status not in _WRITABLE:
            raise NotFound(kind="Queued image", ident=image_id)
        output_format = DISK_FORMATS[image.disk_format]
        session.execute(sa.update(Image).where(Image.id == image_id, Image.status == "queued")
                        .values(status="saving"))
    # Beside the volume files (same filesystem, room the host planned for volumes); a dot name,
    # so reconciliation's volume-file scan never takes it for a volume.
    target = Path(driver.root) / f".upload-{image_id}.{output_format}.partial"
    try:
        driver.root.mkdir(parents=True, exist_ok=True)
        driver.convert_to(volume_id, target, output_format)
        facts = disks.put_image(image_id, str(target))
    finally:
        target.unlink(missing_ok=True)
    with db.begin() as session:
        done = session.execute(sa.update(Image).where(Image.id == image_id, Image.status == "saving")
                               .values(status="active", **facts)).rowcount
    if not done and remove_data is not None:  # deleted while uploading: its bytes must not stay
        try:
            remove_data(image_id)
        except ObjectstoreError as error:
            LOG.warning("image %s was deleted during its upload; its data stays in the objectstore: %s",
                        image_id, error)
