"""Images (streamed upload with progress, delete), networks and subnets."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import falcon

from fabric.dashboard.client import ApiError
from fabric.dashboard.web import field, flash, redirect, render, session, wants_json

#: Bytes moved per read while an upload streams through to the API.
UPLOAD_CHUNK = 256 * 1024

#: Disk formats the upload form offers (the Image API checks what it accepts).
DISK_FORMATS = ("raw", "qcow2", "iso", "vmdk", "vhd", "vdi")


def _refused(err: ApiError) -> bool:
    """A refusal the user can fix (shown on the form) rather than a failure of the cloud."""
    return 400 <= err.status < 500


class Images:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        images = session(req).client().get("image", "/images")["images"]
        render(req, resp, "images.html", images=sorted(images, key=lambda i: (i.get("name") or "", i["id"])),
               disk_formats=DISK_FORMATS)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Create the image record; its data follows by PUT to ``…/images/{id}/file``."""
        body = {"name": field(req, "name"), "disk_format": field(req, "disk_format") or "raw",
                "container_format": "bare"}
        if not body["name"]:
            raise ApiError(400, "Give the image a name.")
        image = session(req).client().call("POST", "image", "/images", body=body)
        session(req).cache.pop("names", None)
        if wants_json(req):
            resp.status = falcon.HTTP_201
            resp.media = {"id": image["id"], "upload": f"/dashboard/images/{image['id']}/file"}
            return
        flash(req, f"Created image {image['name']}; upload its data to make it active.")
        redirect("/dashboard/images")


def _chunks(stream, remaining: int) -> Iterator[bytes]:
    while remaining > 0:
        chunk = stream.read(min(UPLOAD_CHUNK, remaining))
        if not chunk:
            raise ApiError(400, f"the upload ended {remaining} bytes early")
        remaining -= len(chunk)
        yield chunk


class ImageFile:
    def on_put(self, req: falcon.Request, resp: falcon.Response, image_id: str) -> None:
        """Stream the request body to the Image API as it arrives (never held whole)."""
        if req.content_length is None:
            raise falcon.HTTPLengthRequired(description="send the image with its Content-Length")
        session(req).client().call("PUT", "image", f"/images/{quote(image_id, safe='')}/file",
                                   raw=_chunks(req.bounded_stream, req.content_length), length=req.content_length)
        resp.media = {"id": image_id, "status": "active", "bytes": req.content_length}


class ImageDelete:
    def on_post(self, req: falcon.Request, resp: falcon.Response, image_id: str) -> None:
        session(req).client().call("DELETE", "image", f"/images/{quote(image_id, safe='')}")
        session(req).cache.pop("names", None)
        flash(req, "Deleted the image.")
        redirect("/dashboard/images")


def network_view(req: falcon.Request, **extra: Any) -> dict[str, Any]:
    api = session(req).client()
    networks = api.get("network", "/networks")["networks"]
    subnets = {s["id"]: s for s in api.get("network", "/subnets")["subnets"]}
    for network in networks:
        network["subnet_rows"] = [subnets[i] for i in network.get("subnets", []) if i in subnets]
    return {"networks": sorted(networks, key=lambda n: (n.get("name") or "", n["id"])), "error": None,
            "values": {}, **extra}


class Networks:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        render(req, resp, "networks.html", **network_view(req))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Create a network and, when a CIDR is given, its subnet; a refused subnet removes
        the new network again, so nothing is left half-made."""
        values = {"name": field(req, "name"), "cidr": field(req, "cidr"), "subnet_name": field(req, "subnet_name")}
        api = session(req).client()
        try:
            if not values["name"]:
                raise ApiError(400, "Give the network a name.")
            network = api.call("POST", "network", "/networks", body={"network": {"name": values["name"]}})["network"]
            if values["cidr"]:
                try:
                    api.call("POST", "network", "/subnets", body={"subnet": {
                        "network_id": network["id"], "cidr": values["cidr"], "ip_version": 6 if ":" in values["cidr"]
                        else 4, "name": values["subnet_name"]}})
                except ApiError:
                    api.call("DELETE", "network", f"/networks/{network['id']}")
                    raise
        except ApiError as err:
            if not _refused(err):
                raise
            render(req, resp, "networks.html", status=err.status, **network_view(req, error=err.message,
                                                                                  values=values))
            return
        flash(req, f"Created network {network['name']}.")
        redirect("/dashboard/networks")


class NetworkDelete:
    def on_post(self, req: falcon.Request, resp: falcon.Response, network_id: str) -> None:
        session(req).client().call("DELETE", "network", f"/networks/{quote(network_id, safe='')}")
        flash(req, "Deleted the network.")
        redirect("/dashboard/networks")


class SubnetCreate:
    def on_post(self, req: falcon.Request, resp: falcon.Response, network_id: str) -> None:
        cidr = field(req, "cidr")
        try:
            if not cidr:
                raise ApiError(400, "Give the subnet a CIDR, e.g. 10.0.0.0/24.")
            session(req).client().call("POST", "network", "/subnets", body={"subnet": {
                "network_id": network_id, "cidr": cidr, "ip_version": 6 if ":" in cidr else 4,
                "name": field(req, "name")}})
        except ApiError as err:
            if not _refused(err):
                raise
            render(req, resp, "networks.html", status=err.status, **network_view(req, error=err.message))
            return
        flash(req, f"Added subnet {cidr}.")
        redirect("/dashboard/networks")


def register(app: falcon.App, prefix: str) -> None:
    app.add_route(f"{prefix}/images", Images())
    app.add_route(f"{prefix}/images/{{image_id}}/file", ImageFile())
    app.add_route(f"{prefix}/images/{{image_id}}/delete", ImageDelete())
    app.add_route(f"{prefix}/networks", Networks())
    app.add_route(f"{prefix}/networks/{{network_id}}/delete", NetworkDelete())
    app.add_route(f"{prefix}/networks/{{network_id}}/subnets", SubnetCreate())
