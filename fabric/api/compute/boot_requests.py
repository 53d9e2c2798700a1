"""What a server create's body may hold at each Compute microversion, beyond Nova 2.1's:

- ``networks`` (2.37): required, and either a list, ``"auto"`` (the one network the project
  may use) or ``"none"`` (no ports); each item's ``uuid`` must then be a UUID. Before 2.37 a
  missing ``networks`` is an empty list (fabric boots such a server with no ports).
- ``networks[].tag`` (2.32 to 2.36, and 2.42 on, as Nova's bug left it out in between), kept
  with the request as the device's tag;
- ``tags`` (2.52): the server's tags, by the rules of ``/servers/{id}/tags`` (2.26).

Every refusal is a 400 naming the field, the value and the microversion it needs.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from marshmallow import Schema, fields, validate

from fabric import exception
from fabric.api import common
from fabric.api.compute import microversion, tags
from fabric.db.models import Network

AUTO, NONE = "auto", "none"
#: Nova's limit on a device tag (nova.api.validation.parameter_types.device_tag).
DEVICE_TAG_MAX = 60


class NetworkRequestSchema(Schema):
    uuid = fields.String(validate=validate.Length(min=1, max=36))
    port = fields.String(validate=validate.Length(min=1, max=36))
    fixed_ip = fields.IP()
    tag = fields.String(validate=validate.Length(min=1, max=DEVICE_TAG_MAX))  # 2.32-2.36, 2.42+


#: One instance for every request (a marshmallow schema is reusable, and making one costs more
#: than loading a network request with it).
_NETWORK_REQUEST = NetworkRequestSchema()


def device_tags_allowed(req, kind: str) -> bool:
    """Whether a device ``tag`` is accepted on ``kind`` ("networks" or "block_device_mapping_v2")
    at the request's microversion: from 2.32, lost from 2.37 (networks) or 2.33 (block devices),
    back at 2.42, as Nova's history has it."""
    lost = microversion.NETWORKS_REQUIRED if kind == "networks" else microversion.BDM_TAGS_LOST
    return (microversion.between(req, microversion.DEVICE_TAGS, lost)
            or microversion.at_least(req, microversion.DEVICE_TAGS_BACK))


def check_device_tag(req, kind: str, index: int, item: dict) -> None:
    """Raise Invalid when ``item`` (``kind``[``index``]) has a tag the microversion does not accept."""
    if "tag" in item and not device_tags_allowed(req, kind):
        raise exception.Invalid(reason=f"server.{kind}[{index}].tag {item['tag']!r} is accepted at microversions "
                                       f"2.32{'-2.36' if kind == 'networks' else ''} and 2.42 or later; this "
                                       f"request asked for {microversion.text(microversion.of(req))}")


def requested_networks(req, session, context, spec: dict) -> list[dict]:
    """The body's ``networks`` as a list of ``{uuid|port, fixed_ip, tag}`` requests, checked for
    the request's microversion (``"auto"`` resolved to the project's one usable network,
    ``"none"`` to no network)."""
    given = spec.get("networks")
    strict = microversion.at_least(req, microversion.NETWORKS_REQUIRED)
    if given is None:
        if strict:
            raise exception.Invalid(reason="server.networks is required from microversion 2.37: give a list of "
                                           "networks or ports, \"auto\" or \"none\"")
        return []
    if isinstance(given, str):
        if not strict or given not in (AUTO, NONE):
            accepted = '"auto", "none" or a list' if strict else "a list (\"auto\" and \"none\" need 2.37)"
            raise exception.Invalid(reason=f"server.networks {given!r} is not {accepted}")
        return [] if given == NONE else [{"uuid": _the_usable_network(session, context)}]
    if not isinstance(given, list):
        raise exception.Invalid(reason=f"server.networks must be a list, not {type(given).__name__}")
    out = []
    for index, item in enumerate(given):
        if not isinstance(item, dict):
            raise exception.Invalid(reason=f"server.networks[{index}] must be an object with a uuid or a port")
        loaded = common.load(_NETWORK_REQUEST, item)
        check_device_tag(req, "networks", index, loaded)
        if "uuid" in loaded and not is_uuid(loaded["uuid"]):  # Nova checks it at every microversion
            raise exception.Invalid(reason=f"server.networks[{index}].uuid {loaded['uuid']!r} is not a UUID")
        out.append(loaded)
    return out


def boot_tags(req, spec: dict) -> list[str]:
    """The body's ``tags`` (2.52), checked as ``PUT /servers/{id}/tags`` checks them."""
    if "tags" not in spec:
        return []
    microversion.require(req, microversion.TAGS_AT_BOOT, "server.tags")
    return tags.check_tags(spec["tags"], "server.tags")


def is_uuid(value: str) -> bool:
    """Whether ``value`` is a UUID (any of its spellings, as oslo's is_uuid_like)."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _the_usable_network(session, context) -> str:
    """``"auto"``: the one network the project may boot on (its own or a shared one, not an
    external one). fabric has no auto-allocated topology, so none is a 400 and several a 409,
    each naming what it found."""
    candidates = session.execute(
        sa.select(Network.id, Network.name).where(
            Network.external.is_(False),
            sa.or_(Network.shared.is_(True), Network.project_id == context.project_id))
        .order_by(Network.created_at, Network.id)).all()
    if not candidates:
        raise exception.Invalid(reason=f"server.networks \"auto\": project {context.project_id} has no network "
                                       f"to boot on and fabric does not allocate one; create a network or give "
                                       f"\"none\"")
    if len(candidates) > 1:
        names = ", ".join(f"{name or '-'} ({ident})" for ident, name in candidates)
        raise exception.Conflict(reason=f"server.networks \"auto\": several networks are usable ({names}); "
                                        f"name one by uuid")
    return candidates[0].id
