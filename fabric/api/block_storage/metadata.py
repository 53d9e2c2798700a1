"""A volume's or a snapshot's metadata (Cinder's ``/volumes/{id}/metadata`` and
``/snapshots/{id}/metadata``, with ``/{key}`` for one item): one pair of resources
for both, told which they serve. Every write is
:meth:`fabric.volume.api.VolumeService.update_metadata` (a compare-and-swap on the row);
another project's volume or snapshot is a 404 whatever the body."""

from __future__ import annotations

import falcon

from fabric import exception
from fabric.api import common
from fabric.api.block_storage.common import entity, service, versioned


class _Of:
    """What the resources act on: volumes, or snapshots (``snapshot``)."""

    def __init__(self, snapshot: bool) -> None:
        self.snapshot = snapshot
        self.kind = "snapshot" if snapshot else "volume"

    def read(self, req: falcon.Request, ident: str) -> dict:
        """The visible row's metadata; NotFound for another project's or none."""
        svc, context = service(req), common.ctx(req)
        row = svc.get_snapshot(context, ident) if self.snapshot else svc.get(context, ident)
        return row["metadata_items"] or {}

    def update(self, req: falcon.Request, ident: str, items: dict | None = None, **how) -> dict:
        return service(req).update_metadata(common.ctx(req), ident, items, snapshot=self.snapshot, **how)


@versioned
class Metadata(_Of):
    """The whole metadata: read, merged into (POST), replaced (PUT)."""

    def on_get(self, req, resp, **ids):
        (ident,) = ids.values()
        common.respond(resp, {"metadata": self.read(req, ident)})

    def on_post(self, req, resp, **ids):
        (ident,) = ids.values()
        common.respond(resp, {"metadata": self.update(req, ident, entity(req, "metadata"))})

    def on_put(self, req, resp, **ids):
        (ident,) = ids.values()
        common.respond(resp, {"metadata": self.update(req, ident, entity(req, "metadata"), replace=True)})


@versioned
class MetadataKey(_Of):
    """One item: read, set (the body's ``meta`` holds exactly the URL's key), deleted."""

    def on_get(self, req, resp, key, **ids):
        (ident,) = ids.values()
        metadata = self.read(req, ident)
        if key not in metadata:
            raise exception.NotFound(kind="Metadata key", ident=f"{key} of {self.kind} {ident}")
        common.respond(resp, {"meta": {key: metadata[key]}})

    def on_put(self, req, resp, key, **ids):
        (ident,) = ids.values()
        self.read(req, ident)  # another project's: 404 whatever the body
        items = entity(req, "meta")
        if list(items) != [key]:
            raise exception.Invalid(reason=f"the body's meta must hold exactly the key {key!r} of the URL")
        common.respond(resp, {"meta": {key: self.update(req, ident, items)[key]}})

    def on_delete(self, req, resp, key, **ids):
        (ident,) = ids.values()
        self.update(req, ident, remove=(key,))
        resp.status = falcon.HTTP_200
