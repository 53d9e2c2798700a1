"""Routed (Romana L3) networks: the project's segment behind a network.

A routed network has no subnet: its addresses come from a segment of its
project's tenant in IPAM's layout (prefix | host | tenant | segment |
endpoint), so its isolation is the tenant's own and needs nobody else's
number space. Any project member may therefore create one for the project;
only an admin may create one for another project.

The segment is named after the network (after its id when it has no name), as
Romana names a tenant's segments ("web", "db"): IPAM numbers it
(``add_segment``, idempotent by name, so two networks of one project with the
same name share one segment), the API writes the network row on it, and the
last network leaving a segment frees it. The network workers are not told
about a new routed network: a host sets one up when its first guest on it is
plugged, from the database (no bridge or DHCP server exists per routed
network, and the segment's address match is only known from the database).
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from fabric import exception
from fabric.api.clients import Clients
from fabric.context import RequestContext
from fabric.db import Database
from fabric.db.models import Network, Segment, Tenant

LOG = logging.getLogger(__name__)

#: The width of ``segments.name``.
SEGMENT_NAME_MAX = 64


def segment_name(network_name: str, network_id: str) -> str:
    """The name of the segment a routed network is on; Invalid when the name cannot name one."""
    if len(network_name) > SEGMENT_NAME_MAX:
        raise exception.Invalid(reason=f"network.name {network_name[:80]!r} is too long for a routed network: it "
                                       f"names the network's segment, at most {SEGMENT_NAME_MAX} characters")
    return network_name or network_id


def allocate_segment(clients: Clients, context: RequestContext, project_id: str, name: str) -> int:
    """The id of ``project_id``'s segment ``name``, numbered by IPAM if new.

    Raises Conflict when the cloud has no routed layout or the tenant's
    segment numbers are exhausted (NumberExhausted).
    """
    try:
        segment = clients.topology.add_segment(context, project_id=project_id, name=name)
    except exception.NotFound as exc:
        if exc.fields.get("kind") != "datacenter":
            raise
        raise exception.Conflict(reason=f"routed networks need the datacenter's address layout, and this cloud "
                                        f"has none ({exc.message}); an operator configures it first") from None
    return int(segment["id"])


def segment_of(session, segment_id: int | None) -> tuple[str, str] | None:
    """(project id, name) of a segment, or None when there is none."""
    if segment_id is None:
        return None
    row = session.execute(sa.select(Tenant.project_id, Segment.name).join(Tenant, Tenant.id == Segment.tenant_id)
                          .where(Segment.id == segment_id)).first()
    return (row.project_id, row.name) if row is not None else None


def release_segment(db: Database, clients: Clients, context: RequestContext, segment_id: int,
                    segment: tuple[str, str]) -> None:
    """Free the segment ``(project id, name)`` unless a network is still on it.

    Never raises: the network is gone either way, and a segment left behind
    is taken again by the next network of its name (IPAM refuses to remove one
    that still holds addresses).
    """
    with db.begin() as session:
        users = session.scalar(sa.select(sa.func.count()).select_from(Network)
                               .where(Network.segment_id == segment_id))
    if users:
        return
    project_id, name = segment
    try:
        clients.topology.remove_segment(context, project_id=project_id, name=name)
    except exception.FabricError as err:
        LOG.warning("Segment %s of project %s has no network left, but IPAM did not remove it: %s",
                    name, project_id, err.message)
