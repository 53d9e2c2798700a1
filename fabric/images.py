"""Images: what an image id is, which images a project may use, what an instance boots,
and where an image's bytes live. The one home of each of these rules.

The Image API (:mod:`fabric.api.image`, :mod:`fabric.api.image_store`), server
create (:mod:`fabric.api.compute.servers`) and the compute worker
(:class:`fabric.compute.collaborators.LocalImageStore`) all come here: none of
them decides on its own that a text is an image id, that a project may use an
image, or where an image's file is.

An image id is the canonical text of a UUID (what the Image API generates and
accepts), so a valid id never reads as a path. An image boots its own disk
(``disk_format`` qcow2 or raw) or, when its properties name ``kernel_id`` (and
``ramdisk_id``, ``os_command_line``), that kernel directly, as in Glance. Those
references are image ids too, held to the same visibility rule for the project
of the instance that boots them: a tenant can name only images it may see.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from pathlib import Path
from typing import Any

from fabric import config
from fabric.db.models import Image
from fabric.exception import Invalid, NotFound

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


@dataclasses.dataclass(frozen=True)
class BootImages:
    """What an instance boots: the image rows, each one the project may use, active and of its kind."""

    image: Image
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
    image = session.get(Image, wanted)
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


# --- the image store --------------------------------------------------------------


def store_dir(settings: config.Settings) -> Path:
    """The image store directory, ``[api] image_dir`` (default ``data_dir/images``); made if missing."""
    path = Path(settings.api.image_dir or Path(settings.default.data_dir) / "images")
    path.mkdir(parents=True, exist_ok=True)
    return path


class ImageStore:
    """One file per image id, directly inside ``root``; nothing else is ever read from there.

    :meth:`path` is the one place an image id becomes a path; :meth:`existing_file`
    adds the proof a reader needs before it opens anything.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @classmethod
    def from_settings(cls, settings: config.Settings) -> ImageStore:
        """The store the API writes and the compute worker reads (:func:`store_dir`)."""
        return cls(store_dir(settings))

    def path(self, image_id: str) -> Path:
        """Where image ``image_id``'s bytes live (the file exists once uploaded).
        Raises Invalid when ``image_id`` is not an image id."""
        return self.root / parse_image_id(image_id)

    def existing_file(self, image_id: str) -> Path:
        """The real path of image ``image_id``'s bytes, proven to be a regular file directly
        inside the store directory once symlinks are resolved.

        Raises Invalid when ``image_id`` is not an image id or its file leads anywhere else
        (a symlink, even to another image: the API only ever renames regular files into
        place), NotFound when there is no file.
        """
        candidate = self.path(image_id)
        real = Path(os.path.realpath(candidate))
        if real != Path(os.path.realpath(self.root)) / candidate.name:
            raise Invalid(reason=f"image {image_id}'s file leads outside the image store {str(self.root)!r}, "
                                 f"to {str(real)!r}; refusing to read it")
        try:
            mode = os.lstat(real).st_mode
        except FileNotFoundError:
            raise NotFound(kind="Image file of", ident=image_id) from None
        if not stat.S_ISREG(mode):
            raise Invalid(reason=f"image {image_id}'s file {str(real)!r} is not a regular file; refusing to read it")
        return real
