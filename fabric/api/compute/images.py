"""The Compute API's image proxy (``/images``, Compute 2.1 to 2.35; 404 from 2.36, as Nova's):
the images the caller may see (fabric.api.image's rule), shown the way Nova showed Glance's,
and deleted through the Image API's own delete (fabric.api.image), so there is one home for
what a delete does."""

from __future__ import annotations

import falcon
import sqlalchemy as sa

from fabric.api import common
from fabric.api import image as image_api
from fabric.api.compute import microversion
from fabric.api.compute.flavors import links
from fabric.db.models import Image

#: Glance status -> the status Nova's proxy shows, and its progress.
_STATUS = {"queued": ("SAVING", 25), "saving": ("SAVING", 50), "active": ("ACTIVE", 100), "killed": ("ERROR", 0),
           "deleted": ("DELETED", 0), "pending_delete": ("DELETED", 0)}


def _gone(req) -> None:
    microversion.gone(req, microversion.NO_NETWORK_PROXIES, "Compute's image proxy (/images)")


def proxy_document(image: Image, base: str) -> dict:
    """An image as Nova's proxy showed it (its properties as ``metadata``; the server a
    snapshot was taken of as ``server``)."""
    status, progress = _STATUS.get(image.status, ("UNKNOWN", 0))
    properties = {k: v for k, v in (image.properties or {}).items() if not k.startswith("__")}
    doc = {"id": image.id, "name": image.name, "status": status, "progress": progress,
           "minDisk": image.min_disk, "minRam": image.min_ram, "metadata": properties,
           "created": common.isotime(image.created_at), "updated": common.isotime(image.updated_at or image.created_at),
           "links": links(base, "images", image.id), "OS-EXT-IMG-SIZE:size": image.size}
    if properties.get("instance_uuid"):
        server = str(properties["instance_uuid"])
        doc["server"] = {"id": server, "links": links(base, "servers", server)}
    return doc


class Images:
    def _list(self, req, resp, detail: bool) -> None:
        _gone(req)
        deps, context = common.deps(req), common.ctx(req)
        query = sa.select(Image).order_by(Image.created_at.desc(), Image.id)
        if not context.is_admin:
            query = query.where(sa.or_(Image.owner == context.project_id, Image.visibility == "public"))
        base = deps.base_url(req)
        with deps.db.begin() as session:
            rows = session.scalars(query).all()
            docs = [proxy_document(r, base) if detail else {"id": r.id, "name": r.name,
                                                            "links": links(base, "images", r.id)} for r in rows]
        common.respond(resp, {"images": docs})

    def on_get(self, req, resp):
        self._list(req, resp, detail=False)

    def on_get_detail(self, req, resp):
        self._list(req, resp, detail=True)


class ImageItem:
    def on_get(self, req, resp, image_id):
        _gone(req)
        deps = common.deps(req)
        with deps.db.begin() as session:
            image = image_api.find_image(session, common.ctx(req), image_id)
            common.respond(resp, {"image": proxy_document(image, deps.base_url(req))})

    def on_delete(self, req, resp, image_id):
        """The Image API's delete (owner or admin; protected images refused): 204."""
        _gone(req)
        image_api.ImageItem().on_delete(req, resp, image_id)


def register(app: falcon.App, prefix: str) -> None:
    images = Images()
    app.add_route(f"{prefix}/images", images)
    app.add_route(f"{prefix}/images/detail", images, suffix="detail")
    app.add_route(f"{prefix}/images/{{image_id}}", ImageItem())
