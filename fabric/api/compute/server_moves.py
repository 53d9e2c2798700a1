"""The server actions that rebuild, snapshot, resize and migrate a server (``openstack server
rebuild``, ``server image create``, ``server resize`` [``confirm``/``revert``], ``server migrate``).

This module reads the request, resolves the image or flavor it names (refusing, with a 4xx
naming it, one the caller may not use or that does not fit the server), and hands the rest
to :class:`fabric.compute.api.ComputeService`: the state checks (409 naming the state),
the lock, the instance action and the cast to the host.
"""

from __future__ import annotations

import falcon
from marshmallow import INCLUDE, Schema, fields, validate

from fabric import exception, images
from fabric.api import common
from fabric.api.compute import views
from fabric.api.compute.flavors import find_flavor
from fabric.api.compute.lookup import get_instance
from fabric.api.compute.servers import compute_service
from fabric.db.models import Image


class RebuildSchema(Schema):
    class Meta:
        unknown = INCLUDE  # adminPass, metadata, preserve_ephemeral...: accepted and ignored, as fields fabric lacks

    imageRef = fields.String(required=True, validate=validate.Length(min=1))
    name = fields.String(validate=validate.Length(min=1, max=255))


class ResizeSchema(Schema):
    class Meta:
        unknown = INCLUDE  # OS-DCF:diskConfig

    flavorRef = fields.String(required=True, validate=validate.Length(min=1))


class MigrateSchema(Schema):
    host = fields.String(allow_none=True, load_default=None, validate=validate.Length(min=1, max=255))


class CreateImageSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=255))
    metadata = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=255)),
                           values=fields.String(validate=validate.Length(max=255)), load_default=dict)


#: Image properties a snapshot inherits from the image its server booted (so it boots the same way).
INHERITED_PROPERTIES = ("kernel_id", "ramdisk_id", "os_command_line")


def _check_fits(image: Image, memory_mb: int, disk_gb: int, what: str) -> None:
    if image.min_ram > memory_mb or (disk_gb and image.min_disk > disk_gb):
        raise exception.Invalid(reason=f"{what} is too small for image {image.id} (needs {image.min_ram} MiB RAM, "
                                       f"{image.min_disk} GiB disk; has {memory_mb} MiB, {disk_gb} GiB)")


def rebuild(req, resp, server_id: str, args) -> None:
    deps, context = common.deps(req), common.ctx(req)
    data = common.load(RebuildSchema(), args)
    with deps.db.begin() as session:
        instance = get_instance(session, context, server_id)
        # The image as a build resolves it, for the server's own project.
        image = images.resolve_boot(session, instance.project_id, data["imageRef"].rstrip("/").rsplit("/", 1)[-1]).image
        _check_fits(image, instance.memory_mb, instance.disk_gb, f"server {server_id}'s flavor")
        image_id = image.id
    compute_service(deps).rebuild(context, server_id, image_id, data.get("name"))
    with deps.db.begin() as session:
        instance = get_instance(session, context, server_id)
        addresses = views.addresses_for(session, [instance])[instance.id]
        groups = views.groups_for(session, [instance])[instance.id]
        doc = views.server_document(instance, deps.base_url(req), context.is_admin, addresses, None, groups=groups)
    common.respond(resp, {"server": doc}, falcon.HTTP_202)


def resize(req, resp, server_id: str, args) -> None:
    deps, context = common.deps(req), common.ctx(req)
    data = common.load(ResizeSchema(), args)
    with deps.db.begin() as session:
        instance = get_instance(session, context, server_id)
        flavor = find_flavor(session, context, data["flavorRef"])
        image = session.get(Image, instance.image_id) if instance.image_id else None
        if image is not None:
            _check_fits(image, flavor.memory_mb, flavor.disk_gb, f"flavor {flavor.id}")
        new = {"id": flavor.id, "vcpus": flavor.vcpus, "memory_mb": flavor.memory_mb, "disk_gb": flavor.disk_gb}
    compute_service(deps).resize(context, server_id, new)
    resp.status = falcon.HTTP_202


def migrate(req, resp, server_id: str, args) -> None:
    deps, context = common.deps(req), common.ctx(req)
    host = common.load(MigrateSchema(), args or {})["host"]
    with deps.db.begin() as session:
        get_instance(session, context, server_id)
    compute_service(deps).resize(context, server_id, None, host)
    resp.status = falcon.HTTP_202


def confirm_resize(req, resp, server_id: str, args) -> None:
    deps, context = common.deps(req), common.ctx(req)
    with deps.db.begin() as session:
        get_instance(session, context, server_id)
    compute_service(deps).confirm_resize(context, server_id)
    resp.status = falcon.HTTP_204


def revert_resize(req, resp, server_id: str, args) -> None:
    deps, context = common.deps(req), common.ctx(req)
    with deps.db.begin() as session:
        get_instance(session, context, server_id)
    compute_service(deps).revert_resize(context, server_id)
    resp.status = falcon.HTTP_202


def create_image(req, resp, server_id: str, args) -> None:
    deps, context = common.deps(req), common.ctx(req)
    data = common.load(CreateImageSchema(), args)
    with deps.db.begin() as session:
        get_instance(session, context, server_id)

    def make_image(session, row: dict) -> str:
        base = session.get(Image, row["image_id"]) if row["image_id"] else None
        inherited = dict(base.properties or {}) if base is not None else {}
        properties = {key: inherited[key] for key in INHERITED_PROPERTIES if key in inherited}
        properties.update(data["metadata"], instance_uuid=row["id"], image_type="snapshot",
                          base_image_ref=row["image_id"] or "", user_id=context.user_id)
        disk_format = base.disk_format if base is not None and base.disk_format in images.BOOT_DISK_FORMATS \
            else "qcow2"
        image = Image(name=data["name"], owner=row["project_id"], status="queued", visibility="private",
                      disk_format=disk_format, container_format="bare", min_disk=row["disk_gb"],
                      min_ram=base.min_ram if base is not None else 0, properties=properties)
        session.add(image)
        session.flush()
        return image.id

    image_id = compute_service(deps).snapshot(context, server_id, make_image)
    resp.set_header("Location", f"{deps.base_url(req)}/image/v2/images/{image_id}")
    common.respond(resp, {"image_id": image_id}, falcon.HTTP_202)  # the body is microversion 2.45's


#: Action name -> handler(req, resp, server_id, args).
HANDLERS = {"rebuild": rebuild, "resize": resize, "migrate": migrate, "confirmResize": confirm_resize,
            "revertResize": revert_resize, "createImage": create_image}
