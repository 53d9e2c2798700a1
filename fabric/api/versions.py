"""Version discovery documents, the way keystoneauth and openstacksdk read them.

Each API lives under its own prefix so that discovery of one never finds
another's versions: identity at ``/v3`` (and its document at the root),
compute at ``/compute/v2.1``, image at ``/image/v2``, network at
``/networking/v2.0``. The service catalog names these URLs.
"""

from __future__ import annotations

import falcon

from fabric import exception
from fabric.api import common

#: The oldest Compute microversion served (the version document's ``min_version``).
COMPUTE_VERSION = "2.1"
#: The newest Compute microversion served: what a client asking for "latest" gets, and what
#: openstacksdk negotiates (what each brings: fabric.api.compute.microversion; 2.56 lets
#: ``openstack server migrate --host`` name the destination).
COMPUTE_MAX_VERSION = "2.56"
UPDATED = "2026-11-01T00:00:00Z"


def identity_version(base: str) -> dict:
    return {"id": "v3.14", "status": "stable", "updated": UPDATED,
            "links": [{"rel": "self", "href": f"{base}/v3/"}],
            "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]}


def compute_version(base: str) -> dict:
    return {"id": "v2.1", "status": "CURRENT", "version": COMPUTE_MAX_VERSION, "min_version": COMPUTE_VERSION,
            "updated": UPDATED, "links": [{"rel": "self", "href": f"{base}/compute/v2.1/"}],
            "media-types": [{"base": "application/json",
                             "type": "application/vnd.openstack.compute+json;version=2.1"}]}


#: Where Nova's "v2.0 compatible" API lives: v2.1 without microversions (every request is 2.1).
COMPUTE_LEGACY_PREFIX = "/compute/v2"


def compute_legacy_version(base: str) -> dict:
    """The legacy v2.0 endpoint's version document, as Nova answers it (no microversions)."""
    return {"id": "v2.0", "status": "SUPPORTED", "version": "", "min_version": "", "updated": "2011-01-21T11:33:21Z",
            "links": [{"rel": "self", "href": f"{base}{COMPUTE_LEGACY_PREFIX}/"}],
            "media-types": [{"base": "application/json",
                             "type": "application/vnd.openstack.compute+json;version=2"}]}


def legacy_compute_path(path: str) -> str | None:
    """The v2.1 path a request to the legacy v2.0 endpoint is served at (``/compute/v2/servers`` is
    ``/compute/v2.1/servers``), or None for any other path (the endpoint's own version document too)."""
    rest = path.removeprefix(COMPUTE_LEGACY_PREFIX + "/")
    return f"/compute/v2.1/{rest}" if rest != path and rest.strip("/") else None


def _version_tuple(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor)


def parse_compute_version(wanted: str | None) -> tuple[int, int]:
    """The Compute microversion a request asked for, as (major, minor): 2.1 when it names
    none, the newest for "latest". Raises Invalid for a malformed one and
    VersionNotAcceptable (406) for one outside what is served, naming it and the range."""
    if wanted is None:
        return _version_tuple(COMPUTE_VERSION)
    if wanted.strip().lower() == "latest":
        return _version_tuple(COMPUTE_MAX_VERSION)
    try:
        asked = _version_tuple(wanted.strip())
    except ValueError:
        raise exception.Invalid(reason=f"API version {wanted!r} is not of the form 2.N (or 'latest')") from None
    if not _version_tuple(COMPUTE_VERSION) <= asked <= _version_tuple(COMPUTE_MAX_VERSION):
        raise falcon.HTTPNotAcceptable(description=(
            f"Version {wanted} is not supported by the API. Minimum is {COMPUTE_VERSION} "
            f"and maximum is {COMPUTE_MAX_VERSION}."))
    return asked


def image_version(base: str) -> dict:
    return {"id": "v2.0", "status": "CURRENT", "links": [{"rel": "self", "href": f"{base}/image/v2/"}]}


def network_version(base: str) -> dict:
    return {"id": "v2.0", "status": "CURRENT", "links": [{"rel": "self", "href": f"{base}/networking/v2.0/"}]}


class Root:
    """GET / : the identity versions (keystone answers 300 Multiple Choices)."""

    def on_get(self, req, resp):
        base = common.deps(req).base_url(req)
        common.respond(resp, {"versions": {"values": [identity_version(base)]}}, falcon.HTTP_300)


class IdentityV3:
    def on_get(self, req, resp):
        common.respond(resp, {"version": identity_version(common.deps(req).base_url(req))})


class ComputeVersions:
    def on_get(self, req, resp):
        base = common.deps(req).base_url(req)
        # v2.0 first, as Nova lists it (tempest's compute version test expects it there).
        common.respond(resp, {"versions": [compute_legacy_version(base), compute_version(base)]})


class ComputeV20:
    def on_get(self, req, resp):
        common.respond(resp, {"version": compute_legacy_version(common.deps(req).base_url(req))})


class ComputeV21:
    def on_get(self, req, resp):
        common.respond(resp, {"version": compute_version(common.deps(req).base_url(req))})


class ImageVersions:
    def on_get(self, req, resp):
        common.respond(resp, {"versions": [image_version(common.deps(req).base_url(req))]})


class NetworkVersions:
    def on_get(self, req, resp):
        common.respond(resp, {"versions": [network_version(common.deps(req).base_url(req))]})


class NetworkV20:
    def on_get(self, req, resp):
        base = common.deps(req).base_url(req)
        resources = [{"name": n, "collection": n + "s",
                      "links": [{"rel": "self", "href": f"{base}/networking/v2.0/{n}s"}]}
                     for n in ("network", "subnet", "port")]
        common.respond(resp, {"resources": resources})


def register(app: falcon.App) -> None:
    app.add_route("/", Root())
    app.add_route("/v3", IdentityV3())
    app.add_route("/compute", ComputeVersions())
    app.add_route(COMPUTE_LEGACY_PREFIX, ComputeV20())
    app.add_route("/compute/v2.1", ComputeV21())
    app.add_route("/image", ImageVersions())
    app.add_route("/image/versions", ImageVersions())
    app.add_route("/networking", NetworkVersions())
    app.add_route("/networking/v2.0", NetworkV20())
