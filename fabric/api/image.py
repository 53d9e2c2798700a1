"""Image v2 subset, mounted at ``/image/v2``: create, upload, download, list
(name, id, status, visibility, owner, disk_format and size filters), show, update (JSON
patch, RFC 6902's form and openstack-images-v2.1's), tags and delete.

Who may see an image, what an image id is and where its bytes live are
:mod:`fabric.images`' rules; the image references ``kernel_id`` and
``ramdisk_id`` are checked there whenever they are set (create or patch).
The bytes stream to and from the objectstore (:mod:`fabric.api.image_store`).
"""

from __future__ import annotations

import logging

import falcon
import sqlalchemy as sa
from marshmallow import INCLUDE, Schema, fields, validate

from fabric import exception, images
from fabric.api import common, image_store, image_uploads, in_doubt
from fabric.db.models import Image
from fabric.db.types import new_uuid

LOG = logging.getLogger(__name__)
PREFIX = "/image/v2"
_VISIBILITIES = ("public", "private", "shared", "community")
_DISK_FORMATS = ("raw", "qcow2", "vmdk", "vdi", "iso", "ami", "ari", "aki", "vhd", "vhdx", "ploop")
_CONTAINER_FORMATS = ("bare", "ovf", "ova", "aki", "ari", "ami", "docker", "compressed")
#: Attributes that are columns, not free-form properties.
_CORE = {"id", "name", "visibility", "disk_format", "container_format", "min_disk", "min_ram", "tags",
         "protected", "os_hidden", "status", "owner", "size", "checksum", "os_hash_algo", "os_hash_value",
         "created_at", "updated_at", "self", "file", "schema", "virtual_size", "locations", "direct_url"}
_READ_ONLY = _CORE - {"name", "visibility", "disk_format", "container_format", "min_disk", "min_ram", "tags",
                      "protected", "os_hidden"}


class ImageCreateSchema(Schema):
    class Meta:
        unknown = INCLUDE  # extra keys are the image's custom properties

    id = fields.String()  # an image id (fabric.images.parse_image_id), checked in Images.on_post
    name = fields.String(allow_none=True, load_default="", validate=validate.Length(max=255))
    visibility = fields.String(load_default="shared", validate=validate.OneOf(_VISIBILITIES))
    disk_format = fields.String(allow_none=True, load_default=None, validate=validate.OneOf(_DISK_FORMATS))
    container_format = fields.String(allow_none=True, load_default=None,
                                     validate=validate.OneOf(_CONTAINER_FORMATS))
    min_disk = fields.Integer(load_default=0, validate=validate.Range(min=0, max=common.INT_MAX))
    min_ram = fields.Integer(load_default=0, validate=validate.Range(min=0, max=common.INT_MAX))
    tags = fields.List(fields.String(validate=validate.Length(max=255)), load_default=list)
    protected = fields.Boolean(load_default=False)
    os_hidden = fields.Boolean(load_default=False)


def find_image(session, context, image_id: str) -> Image:
    """The image ``image_id`` visible to the caller; NotFound otherwise."""
    image = session.get(Image, image_id)
    if image is None or not images.may_see(context, image):
        raise exception.NotFound(kind="Image", ident=image_id)
    return image


def _owned(session, context, image_id: str) -> Image:
    image = find_image(session, context, image_id)
    if not context.is_admin and image.owner != context.project_id:
        raise exception.Forbidden(reason=f"image {image_id} belongs to another project")
    return image


def image_document(image: Image) -> dict:
    props = dict(image.properties or {})
    tags = props.pop("__tags", [])
    protected = bool(props.pop("__protected", False))
    hidden = bool(props.pop("__os_hidden", False))
    doc = {
        "id": image.id, "name": image.name or None, "status": image.status, "visibility": image.visibility,
        "protected": protected, "os_hidden": hidden, "owner": image.owner, "size": image.size,
        "virtual_size": None, "checksum": image.checksum, "os_hash_algo": image.os_hash_algo,
        "os_hash_value": image.os_hash_value, "min_disk": image.min_disk, "min_ram": image.min_ram,
        "disk_format": image.disk_format, "container_format": image.container_format, "tags": tags,
        "created_at": common.isotime(image.created_at), "updated_at": common.isotime(
            image.updated_at or image.created_at),
        "self": f"/v2/images/{image.id}", "file": f"/v2/images/{image.id}/file", "schema": "/v2/schemas/image",
    }
    doc.update({k: v for k, v in props.items() if k not in doc})
    return doc


def _check_visibility(context, visibility: str) -> None:
    if visibility == "public" and not context.is_admin:
        raise exception.Forbidden(reason="only an admin may make an image public (visibility 'public')")


def _size_filters(req) -> list:
    """The ``size``, ``size_min`` and ``size_max`` filters as conditions on the image size (a
    blank one is absent, as the other filters); Invalid naming one that is no whole number."""
    conditions = []
    for param, compare in (("size", Image.size.__eq__), ("size_min", Image.size.__ge__),
                           ("size_max", Image.size.__le__)):
        if req.get_param(param):
            conditions.append(compare(common.int_param(req, param)))
    return conditions


def _patch_operation(op) -> tuple[str, str]:
    """``(kind, path)`` of one patch operation, in RFC 6902's form (``{"op": "replace",
    "path": "/name"}``) or openstack-images-v2.1's (``{"replace": "/name"}``), which
    python-glanceclient and tempest send; Invalid for anything else."""
    if isinstance(op, dict) and "op" in op:
        return op["op"], str(op.get("path", ""))
    kinds = [kind for kind in ("add", "replace", "remove") if isinstance(op, dict) and kind in op]
    if len(kinds) != 1:
        raise exception.Invalid(reason=f"patch operation {op!r} is not supported; use add, replace or remove "
                                       "on a top-level path")
    return kinds[0], str(op[kinds[0]])


def _no_empty_id(req) -> None:
    """``/v2/images/`` names an image with an empty id, which none has (Glance's 404): the
    app strips the trailing slash, so the collection's handlers see it first."""
    if req.env.get("PATH_INFO", "").endswith("/"):
        raise exception.NotFound(kind="Image", ident="''")


def _in_filter(column, raw: str):
    """``value`` or glance's ``in:a,b`` form."""
    if raw.startswith("in:"):
        return column.in_([v for v in raw[3:].split(",") if v])
    return column == raw


class Images:
    def on_post(self, req, resp):
        deps, context = common.deps(req), common.ctx(req)
        owner = common.require_project(context)
        data = common.body(req, ImageCreateSchema())
        _check_visibility(context, data["visibility"])
        props = {k: v for k, v in data.items() if k not in _CORE and k not in ("protected", "os_hidden")}
        bad = sorted(set(data) & _READ_ONLY - {"id"})
        if bad:
            raise exception.Forbidden(reason=f"attributes {bad} are read-only")
        for key, value in props.items():
            if not isinstance(value, str):
                raise exception.Invalid(reason=f"image property {key!r} must be a string, got {value!r}")
        props.update({"__tags": data["tags"], "__protected": data["protected"], "__os_hidden": data["os_hidden"]})
        image_id = images.parse_image_id(data["id"], "id") if "id" in data else new_uuid()
        with in_doubt.creating(deps.db, "the create of an image") as session:
            if session.get(Image, image_id):
                raise exception.Conflict(reason=f"an image with id {image_id} already exists")
            props = images.check_references(session, owner, image_id, props)
            image = Image(id=image_id, name=data["name"] or "", owner=owner, status="queued",
                          visibility=data["visibility"], disk_format=data["disk_format"],
                          container_format=data["container_format"], min_disk=data["min_disk"],
                          min_ram=data["min_ram"], properties=props)
            session.add(image)
            session.flush()
            doc = image_document(image)
        resp.set_header("Location", f"{deps.base_url(req)}{PREFIX}/images/{doc['id']}")
        common.respond(resp, doc, falcon.HTTP_201)

    def on_get(self, req, resp):
        _no_empty_id(req)
        deps, context = common.deps(req), common.ctx(req)
        query = sa.select(Image).order_by(Image.created_at.desc(), Image.id)
        if not context.is_admin:
            query = query.where(sa.or_(Image.owner == context.project_id, Image.visibility == "public"))
        for param, column in (("name", Image.name), ("id", Image.id), ("status", Image.status),
                              ("visibility", Image.visibility), ("owner", Image.owner),
                              ("disk_format", Image.disk_format)):
            raw = req.get_param(param)
            if raw:
                query = query.where(_in_filter(column, raw))
        query = query.where(*_size_filters(req))
        limit = common.int_param(req, "limit", minimum=0)
        marker = req.get_param("marker")
        with deps.db.begin() as session:
            rows = list(session.scalars(query))
        if marker:
            index = next((i for i, r in enumerate(rows) if r.id == marker), None)
            if index is None:
                raise exception.Invalid(reason=f"marker {marker!r} is not an image in this listing")
            rows = rows[index + 1:]
        doc: dict = {"first": "/v2/images", "schema": "/v2/schemas/images"}
        if limit is not None and len(rows) > limit:
            rows = rows[:limit]
            if rows:  # limit=0 asks for no image: there is no last one to continue after
                doc["next"] = f"/v2/images?limit={limit}&marker={rows[-1].id}"
        doc["images"] = [image_document(r) for r in rows]
        common.respond(resp, doc)

    def on_delete(self, req, resp):
        """``DELETE /v2/images/`` (the trailing slash stripped) names the empty id: no image has it."""
        raise exception.NotFound(kind="Image", ident="''")


class ImageItem:
    def on_get(self, req, resp, image_id):
        with common.deps(req).db.begin() as session:
            common.respond(resp, image_document(find_image(session, common.ctx(req), image_id)))

    def on_patch(self, req, resp, image_id):
        """JSON patch (add, replace, remove) of the changeable attributes and properties, in
        either form :func:`_patch_operation` reads."""
        context = common.ctx(req)
        ops = common.read_json(req)
        if not isinstance(ops, list):
            raise exception.Invalid(reason="the body must be a JSON patch: a list of {op, path, value}")
        with common.deps(req).db.begin() as session:
            image = _owned(session, context, image_id)
            props = dict(image.properties or {})
            for op in ops:
                kind, path = _patch_operation(op)
                path = path.lstrip("/")
                if kind not in ("add", "replace", "remove") or not path or "/" in path:
                    raise exception.Invalid(reason=f"patch operation {op!r} is not supported; use add, replace "
                                                   "or remove on a top-level path")
                if path in _READ_ONLY:
                    raise exception.Forbidden(reason=f"attribute {path!r} is read-only")
                value = op.get("value")
                if path in ("tags", "protected", "os_hidden"):
                    props[f"__{path}"] = value if kind != "remove" else ([] if path == "tags" else False)
                elif path in ("name", "visibility", "disk_format", "container_format", "min_disk", "min_ram"):
                    loaded = common.load(ImageCreateSchema(partial=True), {path: value})
                    if path == "visibility":
                        _check_visibility(context, loaded[path])
                    setattr(image, path, loaded[path] if kind != "remove" else None)
                elif kind == "remove":
                    if path not in props:
                        raise exception.Conflict(reason=f"image property {path!r} is not set")
                    props.pop(path)
                else:
                    if not isinstance(value, str):
                        raise exception.Invalid(reason=f"image property {path!r} must be a string, got {value!r}")
                    props[path] = value
            # Only references this patch sets are checked: an image whose kernel was since made
            # private can still be renamed (server create refuses to boot it).
            before = image.properties or {}
            props.update(images.check_references(session, image.owner, image.id, {
                k: v for k, v in props.items() if k in images.REFERENCE_FORMATS and before.get(k) != v}))
            image.properties = props
            session.flush()
            common.respond(resp, image_document(image))

    def on_delete(self, req, resp, image_id):
        deps, context = common.deps(req), common.ctx(req)
        with deps.db.begin() as session:
            image = _owned(session, context, image_id)
            if (image.properties or {}).get("__protected"):
                raise exception.Forbidden(reason=f"image {image_id} is protected; unset 'protected' first")
            session.delete(image)
        _remove_data(deps, image_id)
        resp.status = falcon.HTTP_204


def _remove_data(deps, image_id: str) -> None:
    """Delete a deleted image's object; an objectstore that cannot do it now leaves an object no
    row names (logged), never a row without its bytes."""
    try:
        image_store.remove(deps.settings, deps.db, image_id)
    except exception.ObjectstoreError as exc:
        LOG.warning("image %s is deleted but its data stays in the objectstore: %s", image_id, exc)


class ImageTag:
    """``/v2/images/{id}/tags/{tag}``: PUT adds the tag (again is no change), DELETE removes it
    (404 when the image does not have it). The owner's (or an admin's) to change."""

    def on_put(self, req, resp, image_id, tag):
        if len(tag) > 255:
            raise exception.Invalid(reason=f"tag {tag[:40]!r}... is longer than 255 characters")
        self._change(req, image_id, lambda tags: tags if tag in tags else [*tags, tag])
        resp.status = falcon.HTTP_204

    def on_delete(self, req, resp, image_id, tag):
        def without(tags):
            if tag not in tags:
                raise exception.NotFound(kind="Tag", ident=f"{tag} of image {image_id}")
            return [t for t in tags if t != tag]
        self._change(req, image_id, without)
        resp.status = falcon.HTTP_204

    @staticmethod
    def _change(req, image_id, change) -> None:
        with common.deps(req).db.begin() as session:
            image = _owned(session, common.ctx(req), image_id)
            props = dict(image.properties or {})
            props["__tags"] = change(list(props.get("__tags", [])))
            image.properties = props


class ImageFile:
    def on_put(self, req, resp, image_id):
        """Stream the body into the store: queued -> saving -> active, under a lease this process
        renews while it uploads (:mod:`fabric.api.image_uploads`: an upload whose process died
        leaves the image to be taken over or put back to queued)."""
        deps, context = common.deps(req), common.ctx(req)
        upload = image_uploads.Upload(deps.db, image_id, deps.settings.api.image_upload_lease)
        with deps.db.begin() as session:
            image = _owned(session, context, image_id)
            if not upload.begin(session):
                raise exception.Conflict(reason=f"image {image_id} is {image.status}; data can only be uploaded "
                                                "to a queued image (or to one whose upload stopped: "
                                                "[api] image_upload_lease after its last bytes)")
        stream = req.bounded_stream if req.content_length is not None else req.stream
        try:
            with upload.held():
                facts = image_store.write(deps.settings, deps.db, image_id, upload.reading(stream.read),
                                          deps.settings.api.max_image_size, req.content_length)
        except BaseException:
            upload.abandon()
            raise
        if not upload.finish(facts):  # deleted while uploading
            _remove_data(deps, image_id)
            raise exception.Conflict(reason=f"image {image_id} was deleted during the upload")
        resp.status = falcon.HTTP_204

    def on_get(self, req, resp, image_id):
        deps = common.deps(req)
        with deps.db.begin() as session:
            image = find_image(session, common.ctx(req), image_id)
        if image.status != "active":
            resp.status = falcon.HTTP_204
            return
        try:
            data = image_store.open_data(deps.settings, deps.db, image.id)
        except exception.Invalid:  # a row whose id is no image id has no data it may serve
            raise exception.NotFound(kind="Image data of", ident=image_id) from None
        if data.length != image.size:
            data.close()
            raise exception.ObjectstoreError(url=deps.settings.objectstore_url, request=f"GET image {image.id}",
                                             status=200, code="", reason=f"the object has {data.length} bytes, "
                                                                         f"the image {image.size}")
        resp.content_type = "application/octet-stream"
        resp.set_header("Content-MD5", image.checksum or "")
        resp.set_stream(data, image.size)


class Schemas:
    def on_get(self, req, resp, name):
        if name not in ("image", "images"):
            raise exception.NotFound(kind="Schema", ident=name)
        common.respond(resp, {"name": name, "properties": {}, "additionalProperties": {"type": "string"}})


def register(app: falcon.App) -> None:
    app.add_route(f"{PREFIX}/images", Images())
    app.add_route(f"{PREFIX}/images/{{image_id}}", ImageItem())
    app.add_route(f"{PREFIX}/images/{{image_id}}/file", ImageFile())
    app.add_route(f"{PREFIX}/images/{{image_id}}/tags/{{tag}}", ImageTag())
    app.add_route(f"{PREFIX}/schemas/{{name}}", Schemas())
