"""Images: what an image id is, which images a project may use, what an instance boots,
and where an image's bytes live. The one home of each of these rules.

The Image API (:mod:`fabric.api.image`, :mod:`fabric.api.image_store`), server
create (:mod:`fabric.api.compute.servers`) and the compute worker
(:class:`fabric.compute.collaborators.ObjectstoreImages`) all come here: none of
them decides on its own that a text is an image id, that a project may use an
image, or where an image's bytes are.

An image's bytes are one object in the objectstore, key = image id, in the
bucket :data:`BUCKET` of the image service's own project; the Image API and the
compute hosts reach it with the image service's EC2 credential
(:func:`service_credential`). A compute host keeps what it downloaded in its
:class:`ImageCache`, one file per image id and checksum, each file proven to be
the bytes the Image API recorded (size, MD5, SHA-512) before it is named.

An image id is the canonical text of a UUID (what the Image API generates and
accepts), so a valid id never reads as a path. An image boots its own disk
(``disk_format`` qcow2 or raw) or, when its properties name ``kernel_id`` (and
``ramdisk_id``, ``os_command_line``), that kernel directly, as in Glance. Those
references are image ids too, held to the same visibility rule for the project
of the instance that boots them: a tenant can name only images it may see.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import http.client
import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import sqlalchemy as sa

from fabric import config
from fabric.db import Database
from fabric.db.models import Ec2Credential, Image, Project, User
from fabric.exception import ImageDataCorrupt, Invalid, NotFound

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
#: What an error shows as an example of a valid image id.
EXAMPLE_ID = "3f0c8e3a-5b1d-4c55-9b9e-2a8f1e6d7c40"

#: Visibilities that let every project use an image by its id. "shared" images are
#: their owner's only: Glance shares them with members, and fabric has no image members.
OPEN_TO_ALL = ("public", "community")

#: Image properties that name another image, and the disk formats the named image must have.
REFERENCE_FORMATS: dict[str, tuple[str, ...]] = {"kernel_id": ("aki",), "ramdisk_id": ("ari",)}
#: Disk formats an image without ``kernel_id`` may boot from.
BOOT_DISK_FORMATS = ("qcow2", "raw")


def parse_image_id(value: Any, what: str = "image id") -> str:
    """``value`` as an image id: the lower-case canonical text of a UUID.

    Raises Invalid naming ``what`` and the value for anything else (a path, a
    name, an empty or non-string value).
    """
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise Invalid(reason=f"{what} {value!r} is not an image id; an image id is a UUID "
                             f"such as {EXAMPLE_ID!r}")
    return value.lower()


def project_may_see(image: Image, project_id: str | None) -> bool:
    """Whether ``project_id`` may see and use ``image``: its own, or a public or community one."""
    return image.visibility in OPEN_TO_ALL or (project_id is not None and image.owner == project_id)


def may_see(context: Any, image: Image) -> bool:
    """Whether the Image API shows ``image`` to the caller (an admin sees every image)."""
    return bool(context.is_admin) or project_may_see(image, context.project_id)


def _referenced(session: Any, project_id: str | None, image_id: str, prop: str, value: Any) -> Image:
    """The image that ``image_id``'s property ``prop`` names, when it is an image id of an
    image ``project_id`` may see with a disk format ``prop`` accepts; Invalid otherwise
    (an unknown image and one the project may not see get the same answer)."""
    ref = parse_image_id(value, f"image {image_id} property {prop}")
    target = session.get(Image, ref)
    if target is None or not project_may_see(target, project_id):
        raise Invalid(reason=f"image {image_id} property {prop} {value!r} names no image that project "
                             f"{project_id} may use")
    accepted = REFERENCE_FORMATS[prop]
    if target.disk_format not in accepted:
        raise Invalid(reason=f"image {image_id} property {prop} {value!r} names an image of disk_format "
                             f"{target.disk_format!r}; accepted: {', '.join(accepted)}")
    return target


def check_references(session: Any, project_id: str | None, image_id: str, properties: dict) -> dict:
    """``properties`` with each image reference (``kernel_id``, ``ramdisk_id``) in its canonical
    form, once each names an image ``project_id`` may use and of the right kind.

    The Image API calls this for every property it stores. Raises Invalid naming the
    property and its value.
    """
    checked = dict(properties)
    for prop in REFERENCE_FORMATS:
        if prop in checked:
            checked[prop] = _referenced(session, project_id, image_id, prop, checked[prop]).id
    return checked


#: The boot image's row as resolve_boot reads it, built once: a Core row (its columns by the
#: Image attributes' names) costs about half the CPU of the ORM's load of the entity, on the
#: path of every POST /servers.
_IMAGE_ROW = sa.select(Image.__table__).where(Image.__table__.c.id == sa.bindparam("image_id"))


@dataclasses.dataclass(frozen=True)
class BootImages:
    """What an instance boots: the image rows, each one the project may use, active and of its
    kind (the boot image a read-only row with the Image columns as attributes, not an entity)."""

    image: Any
    kernel: Image | None = None
    ramdisk: Image | None = None

    @property
    def cmdline(self) -> str:
        return str((self.image.properties or {}).get("os_command_line", ""))


def resolve_boot(session: Any, project_id: str | None, image_id: Any) -> BootImages:
    """The images an instance of ``project_id`` booting ``image_id`` uses.

    Every image named (the boot image, its ``kernel_id`` and ``ramdisk_id``) is one
    ``project_id`` may see, active, and of the right kind: the boot image has a disk
    format in :data:`BOOT_DISK_FORMATS` or names a kernel; the kernel and ramdisk have
    the formats :data:`REFERENCE_FORMATS` gives. Raises NotFound when ``image_id`` is
    no image the project may see (a text that is not an id names none either), and
    Invalid, naming the image, property and value, for anything else.
    """
    try:
        wanted = parse_image_id(image_id)
    except Invalid:
        raise NotFound(kind="Image", ident=image_id) from None
    image = session.execute(_IMAGE_ROW, {"image_id": wanted}).first()
    if image is None or not project_may_see(image, project_id):
        raise NotFound(kind="Image", ident=image_id)
    _require_active(image, "image")
    props = dict(image.properties or {})
    if "kernel_id" not in props:
        if "ramdisk_id" in props:
            raise Invalid(reason=f"image {image.id} names ramdisk_id {props['ramdisk_id']!r} but no kernel_id; "
                                 "a ramdisk boots only with a kernel")
        if image.disk_format not in BOOT_DISK_FORMATS:
            raise Invalid(reason=f"image {image.id} disk_format {image.disk_format!r}: accepted "
                                 f"{', '.join(BOOT_DISK_FORMATS)} (or a kernel_id property for direct kernel boot)")
        return BootImages(image)
    kernel = _referenced(session, project_id, image.id, "kernel_id", props["kernel_id"])
    _require_active(kernel, f"image {image.id} kernel_id")
    ramdisk = None
    if "ramdisk_id" in props:
        ramdisk = _referenced(session, project_id, image.id, "ramdisk_id", props["ramdisk_id"])
        _require_active(ramdisk, f"image {image.id} ramdisk_id")
    return BootImages(image, kernel, ramdisk)


def _require_active(image: Image, what: str) -> None:
    if image.status != "active":
        raise Invalid(reason=f"{what} {image.id} is {image.status}; only an active image can boot")


# --- where the bytes live ------------------------------------------------------------

#: The objectstore bucket of image data (one object per image id), private to SERVICE_PROJECT.
BUCKET = "fabric-images"
#: The project and user whose EC2 credential the image service signs its requests with
#: (made by :func:`fabric.api.bootstrap.ensure_image_service`).
SERVICE_PROJECT = "service"
SERVICE_USER = "fabric-image-service"
#: Bytes read at a time while an image streams.
CHUNK = 1024 * 1024
_SHA512 = re.compile(r"[0-9a-f]{128}")


def object_key(image_id: str) -> str:
    """The objectstore key of image ``image_id``'s bytes. Raises Invalid for a text that is no image id."""
    return parse_image_id(image_id)


def service_credential(db: Database) -> tuple[str, str] | None:
    """(access key, secret) of the image service's EC2 credential, or None when there is none yet."""
    query = (sa.select(Ec2Credential.access, Ec2Credential.secret)
             .join(User, User.id == Ec2Credential.user_id).join(Project, Project.id == Ec2Credential.project_id)
             .where(User.name == SERVICE_USER, User.domain_id == "default", Project.name == SERVICE_PROJECT,
                    Project.domain_id == "default")
             .order_by(Ec2Credential.created_at, Ec2Credential.access).limit(1))
    with db.begin() as session:
        row = session.execute(query).first()
    return (row.access, row.secret) if row else None


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """What the Image API recorded of an active image's bytes: the facts a download is checked against."""

    id: str
    size: int
    md5: str
    sha512: str

    @classmethod
    def of(cls, image: Image) -> ImageRecord:
        """The record of an active image row; Invalid when the row lacks its size or checksums."""
        sha512 = (image.os_hash_value or "").lower() if image.os_hash_algo == "sha512" else ""
        if image.size is None or not image.checksum or not _SHA512.fullmatch(sha512):
            raise Invalid(reason=f"image {image.id} has no recorded size, MD5 and SHA-512; its data cannot be "
                                 "verified (upload it again)")
        return cls(parse_image_id(image.id), int(image.size), image.checksum.lower(), sha512)


class ImageCache:
    """A compute host's downloaded images: one file per image id and SHA-512, directly inside ``root``.

    :meth:`path` is the one place a record becomes a path; :meth:`existing_file`
    adds the proof a reader needs before it opens anything; :meth:`fetch` is the
    only writer: a download lands in a temporary file, is checked against the
    record, and only then renamed into place.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @classmethod
    def from_settings(cls, settings: config.Settings) -> ImageCache:
        """The cache in this host's own ``data_dir/image-cache``."""
        return cls(Path(settings.default.data_dir) / "image-cache")

    def path(self, record: ImageRecord) -> Path:
        """Where the verified bytes of ``record`` live once fetched. Raises Invalid when its id is no
        image id or its SHA-512 no hex digest."""
        sha512 = record.sha512 if _SHA512.fullmatch(record.sha512) else ""
        if not sha512:
            raise Invalid(reason=f"image {record.id}: SHA-512 {record.sha512!r} is not 128 hex digits")
        return self.root / f"{parse_image_id(record.id)}.{sha512}"

    def existing_file(self, record: ImageRecord) -> Path:
        """The real path of ``record``'s cached bytes, proven to be a regular file of the recorded
        size directly inside the cache once symlinks are resolved.

        Raises Invalid when the file leads anywhere else (only :meth:`fetch` renames regular
        files into place) or has another size, NotFound when it is not cached.
        """
        candidate = self.path(record)
        real = Path(os.path.realpath(candidate))
        if real != Path(os.path.realpath(self.root)) / candidate.name:
            raise Invalid(reason=f"image {record.id}'s cached file leads outside the image cache "
                                 f"{str(self.root)!r}, to {str(real)!r}; refusing to read it")
        try:
            info = os.lstat(real)
        except FileNotFoundError:
            raise NotFound(kind="Cached image", ident=record.id) from None
        if not stat.S_ISREG(info.st_mode):
            raise Invalid(reason=f"image {record.id}'s cached file {str(real)!r} is not a regular file; "
                                 "refusing to read it")
        if info.st_size != record.size:
            raise Invalid(reason=f"image {record.id}'s cached file {str(real)!r} has {info.st_size} bytes, "
                                 f"the image {record.size}; refusing to read it")
        return real

    def fetch(self, record: ImageRecord, download: Callable[[str], BinaryIO]) -> Path:
        """The cached file of ``record``, downloaded first if missing: ``download(image_id)`` opens the
        bytes (a readable stream, closed here).

        Raises ImageDataCorrupt ("image <id>: downloaded N bytes, expected M", or a checksum
        mismatch) when the download is not the recorded bytes; nothing is cached then.
        """
        try:
            return self.existing_file(record)
        except NotFound:
            pass
        final = self.path(record)
        self.root.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=self.root, prefix=f".{record.id}.", suffix=".partial")
        try:
            md5, sha512, size = hashlib.md5(usedforsecurity=False), hashlib.sha512(), 0
            with os.fdopen(handle, "wb") as out, download(record.id) as source:
                # One byte past the record is enough to know the download is too long.
                while size <= record.size and (data := _read(source, min(CHUNK, record.size + 1 - size))):
                    size += len(data)
                    md5.update(data)
                    sha512.update(data)
                    out.write(data)
                if size != record.size:
                    longer = "+" if size > record.size else ""
                    raise ImageDataCorrupt(image=record.id,
                                           reason=f"downloaded {size}{longer} bytes, expected {record.size}")
                for name, got, want in (("MD5", md5.hexdigest(), record.md5),
                                        ("SHA-512", sha512.hexdigest(), record.sha512)):
                    if not hmac.compare_digest(got, want):
                        raise ImageDataCorrupt(image=record.id, reason=f"checksum mismatch: {name} of the "
                                                                       f"download is {got}, expected {want}")
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, final)
        finally:
            Path(partial).unlink(missing_ok=True)
        return self.existing_file(record)


def _read(source: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes; b"" (a short download) when the connection breaks instead."""
    try:
        return source.read(size)
    except (http.client.HTTPException, OSError):
        return b""
