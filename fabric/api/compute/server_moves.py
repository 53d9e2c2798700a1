"""The server actions that rebuild, snapshot, resize and migrate a server (``openstack server
rebuild``, ``server image create``, ``server resize`` [``confirm``/``revert``], ``server migrate``).

This module reads the request, resolves the image or flavor it names (refusing, with a 4xx
naming it, one the caller may not use or that does not fit the server), and hands the rest
to :class:`fabric.compute.api.ComputeService`: the state checks (409 naming the state),
the lock, the instance action and the cast to the host.
"""

from __future__ import annotations

import secrets

import falcon
import sqlalchemy as sa
from marshmallow import INCLUDE, Schema, fields, validate

from fabric import exception, images
from fabric.api import common
from fabric.api.compute import microversion, server_metadata, views
from fabric.api.compute.flavors import find_flavor
from fabric.api.compute.lookup import get_instance
from fabric.api.compute.servers import access_addresses, compute_service
from fabric.db.models import Image, Keypair


class RebuildSchema(Schema):
    class Meta:
        unknown = INCLUDE  # adminPass, preserve_ephemeral...: accepted and ignored, as fields fabric lacks

    imageRef = fields.String(required=True, validate=validate.Length(min=1))
    name = fields.String(validate=validate.Length(min=1, max=255))
    key_name = fields.String(allow_none=True, validate=validate.Length(min=1, max=255))  # 2.54; null unsets
    # Replaces the server's metadata when given (Nova's rebuild), kept when not.
    metadata = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=255)),
                           values=fields.String(validate=validate.Length(max=255)))
    accessIPv4 = fields.IPv4()
    accessIPv6 = fields.IPv6()


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
    """Rebuild onto ``imageRef``; ``name``, ``metadata`` (replacing the server's), ``accessIPv4`` and
    ``accessIPv6`` change with it; from 2.54 ``key_name`` sets (or, null, unsets) its key pair."""
    deps, context = common.deps(req), common.ctx(req)
    data = common.load(RebuildSchema(), args)
    key = None
    if "key_name" in data:
        microversion.require(req, microversion.KEYPAIR_ON_REBUILD, "rebuild.key_name")
    with deps.db.begin() as session:
        instance = get_instance(session, context, server_id)
        if "key_name" in data:
            key = (data["key_name"], _public_key(session, context.user_id, data["key_name"]))
        # The image as a build resolves it, for the server's own project.
        image = images.resolve_boot(session, instance.project_id, data["imageRef"].rstrip("/").rsplit("/", 1)[-1]).image
        _check_fits(image, instance.memory_mb, instance.disk_gb, f"server {server_id}'s flavor")
        image_id = image.id
    if len(data.get("metadata", {})) > server_metadata.MAX_ITEMS:
        raise exception.Invalid(reason=f"rebuild.metadata of {len(data['metadata'])} items: at most "
                                       f"{server_metadata.MAX_ITEMS} are accepted")
    changes = access_addresses(data) | ({"metadata_items": data["metadata"]} if "metadata" in data else {})
    compute_service(deps).rebuild(context, server_id, image_id, data.get("name"), key=key, changes=changes)
    version = microversion.of(req)
    with deps.db.begin() as session:
        instance = get_instance(session, context, server_id)
        addresses = views.addresses_for(session, [instance])[instance.id]
        groups = views.groups_for(session, [instance])[instance.id]
        server_tags = views.tags_for(session, [instance])[instance.id] if version >= microversion.TAGS else None
        doc = views.server_document(instance, deps.base_url(req), context.is_admin, addresses, None, groups=groups,
                                    version=version, tags=server_tags, flavors=views.flavors_for(session, [instance]))
    # Nova answers the password it set (fabric sets none in the guest, as at create).
    doc = views.update_view(doc) | {"adminPass": data.get("adminPass") or secrets.token_urlsafe(12)}
    common.respond(resp, {"server": doc}, falcon.HTTP_202)


def resize(req, resp, server_id: str, args) -> None:
    deps, context = common.deps(req), common.ctx(req)
    data = common.load(ResizeSchema(), args)
    with deps.db.begin() as session:
        instance = get_instance(session, context, server_id)
        try:
            flavor = find_flavor(session, context, data["flavorRef"])
        except exception.NotFound:  # a bad request, not a missing resource: Nova's 400
            raise exception.Invalid(reason=f"resize.flavorRef {data['flavorRef']!r} is not a flavor") from None
        image = session.get(Image, instance.image_id) if instance.image_id else None
        if image is not None:
            _check_fits(image, flavor.memory_mb, flavor.disk_gb, f"flavor {flavor.id}")
        new = {"id": flavor.id, "vcpus": flavor.vcpus, "memory_mb": flavor.memory_mb, "disk_gb": flavor.disk_gb}
    compute_service(deps).resize(context, server_id, new)
    resp.status = falcon.HTTP_202


def migrate(req, resp, server_id: str, args) -> None:
    """Cold-migrate (admin); from 2.56 to ``host``, which the scheduler checks like any other."""
    deps, context = common.deps(req), common.ctx(req)
    if args is not None and not microversion.at_least(req, microversion.MIGRATE_HOST):
        # Nova's body before 2.56 is {"migrate": null}.
        microversion.require(req, microversion.MIGRATE_HOST, f"migrate's body {args!r}")
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
        properties.update(instance_uuid=row["id"], image_type="snapshot", base_image_ref=row["image_id"] or "",
                          user_id=context.user_id)
        properties.update(data["metadata"])  # the request's metadata last, as Nova applies it
        disk_format = base.disk_format if base is not None and base.disk_format in images.BOOT_DISK_FORMATS \
            else "qcow2"
        image = Image(name=data["name"], owner=row["project_id"], status="queued", visibility="private",
                      disk_format=disk_format, container_format="bare", min_disk=row["disk_gb"],
                      min_ram=base.min_ram if base is not None else 0, properties=properties)
        session.add(image)
        session.flush()
        return image.id

    image_id = compute_service(deps).snapshot(context, server_id, make_image)
    if microversion.at_least(req, microversion.IMAGE_ID_BODY):
        common.respond(resp, {"image_id": image_id}, falcon.HTTP_202)
    else:  # Nova before 2.45: the image's Location and no body
        resp.set_header("Location", f"{deps.base_url(req)}/image/v2/images/{image_id}")
        resp.status = falcon.HTTP_202


def _public_key(session, user_id: str, key_name: str | None) -> str | None:
    """The public key of the requesting user's key pair ``key_name`` (None for None); Invalid naming
    it when the user has none of that name, as at create."""
    if key_name is None:
        return None
    key = session.scalar(sa.select(Keypair.public_key).where(Keypair.user_id == user_id, Keypair.name == key_name))
    if key is None:
        raise exception.Invalid(reason=f"keypair {key_name!r} does not exist for this user")
    return key


#: Action name -> handler(req, resp, server_id, args).
HANDLERS = {"rebuild": rebuild, "resize": resize, "migrate": migrate, "confirmResize": confirm_resize,
            "revertResize": revert_resize, "createImage": create_image}
