"""Which Compute microversion a request asked for, and the one table of what each adds.

The middleware parses the request's ``OpenStack-API-Version`` (or
``X-OpenStack-Nova-API-Version``) header into ``req.context.compute_version``
(fabric.api.versions.parse_compute_version); resources ask :func:`at_least`
before showing or accepting what a later microversion brought, so a client
asking for 2.1 gets exactly Nova's 2.1 documents.
"""

from __future__ import annotations

from fabric import exception

#: (major, minor) at which each feature appears, as in Nova's API history.
KEYPAIR_TYPE = (2, 2)         # a key pair's "type" (ssh, x509); keypair create 201, delete 204
LOCKED = (2, 9)               # "locked" in server documents
SOFT_POLICIES = (2, 15)       # soft-affinity / soft-anti-affinity server groups
DESCRIPTION = (2, 19)         # server "description" (create, update, show)
TAGS = (2, 26)                # server tags: /servers/{id}/tags, "tags" in documents, ?tags= filters
CPU_INFO_OBJECT = (2, 28)     # a hypervisor's "cpu_info" a JSON object, not a string
DEVICE_TAGS = (2, 32)         # "tag" on a server create's networks[] (and block_device_mapping_v2[])
BDM_TAGS_LOST = (2, 33)       # Nova's bug: block device tags refused from here until DEVICE_TAGS_BACK
HYPERVISOR_PAGES = (2, 33)    # os-hypervisors ?limit= and ?marker=
KEYPAIR_PAGES = (2, 35)       # os-keypairs ?limit= and ?marker=, sorted by name
NO_NETWORK_PROXIES = (2, 36)  # network quotas and limits gone from os-quota-sets and /limits
NETWORKS_REQUIRED = (2, 37)   # server create needs "networks": a list, "auto" or "none"; network tags lost
STRICT_STATUS = (2, 38)       # ?status= naming no status is a 400 (before: an empty list)
NO_IMAGE_META_LIMIT = (2, 39)  # "maxImageMeta" gone from /limits
USAGE_PAGES = (2, 40)         # os-simple-tenant-usage ?limit= and ?marker=, tenant_usages_links
AGGREGATE_UUID = (2, 41)      # "uuid" in aggregate documents
DEVICE_TAGS_BACK = (2, 42)    # "tag" accepted again on networks[] and block_device_mapping_v2[]
NO_OS_HOSTS = (2, 43)         # os-hosts answers 404
IMAGE_ID_BODY = (2, 45)       # createImage answers {"image_id"} and no Location header
FLAVOR_EMBEDDED = (2, 47)     # a server's "flavor" is the flavor's details, not its id and links
STANDARD_DIAGNOSTICS = (2, 48)  # diagnostics are the standard fields only
ATTACH_TAGS = (2, 49)         # "tag" on a volume or interface attachment (fabric.api.compute.volume_attachments)
ACTION_EVENTS = (2, 51)       # an instance action's "events" shown to everyone (traceback to admins)
TAGS_AT_BOOT = (2, 52)        # "tags" in a server create
SERVICE_UUIDS = (2, 53)       # services and hypervisors named by UUID; PUT/DELETE /os-services/{uuid}
KEYPAIR_ON_REBUILD = (2, 54)  # "key_name" in a rebuild
FLAVOR_DESCRIPTION = (2, 55)  # "description" in flavor documents
MIGRATE_HOST = (2, 56)        # "host" in a cold migration
LOCKED_REASON = (2, 73)       # "locked_reason" (newer than fabric serves: never shown)


def of(req) -> tuple[int, int]:
    """The request's microversion (2.1 when it named none)."""
    return getattr(req.context, "compute_version", None) or (2, 1)


def at_least(req, version: tuple[int, int]) -> bool:
    """Whether the request asked for ``version`` or later."""
    return of(req) >= version


def between(req, first: tuple[int, int], past: tuple[int, int]) -> bool:
    """Whether the request asked for ``first`` or later but for less than ``past``."""
    return first <= of(req) < past


def require(req, version: tuple[int, int], what: str) -> None:
    """Raise Invalid (400) naming ``what`` unless the request asked for ``version`` or later."""
    if not at_least(req, version):
        raise exception.Invalid(reason=f"{what} needs microversion {text(version)} or later "
                                       f"(OpenStack-API-Version: compute {text(version)}); this request asked "
                                       f"for {text(of(req))}")


def gone(req, version: tuple[int, int], what: str) -> None:
    """Raise NotFound (404), as Nova does for an API it removed at ``version``, when the request
    asked for ``version`` or later."""
    if at_least(req, version):
        raise exception.NotFound(kind=what, ident=f"at microversion {text(of(req))} (removed at {text(version)})")


def text(version: tuple[int, int]) -> str:
    """``(2, 19)`` as "2.19", for messages."""
    return f"{version[0]}.{version[1]}"
