"""Who is asking: the instance behind (network, fixed address), read from the database.

The only way in is :func:`find_instance`, given the network a request arrived
on and the request's source address, both taken from the connection by the
server. A port of that network holding that address, bound to a live
instance, names the instance; anything else is "nobody". One short read-only
transaction per lookup; the answer is a plain value the formatters read.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import logging
import re

import sqlalchemy as sa

from fabric.db import Database
from fabric.db.models import AddressAllocation, Flavor, FloatingIp, Instance, Network, Port, Subnet
from fabric.network.dbstate import ipv4_addresses

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PortFacts:
    """One NIC of the instance: its network, MAC and IPv4 address with its subnet (if any)."""

    id: str
    network_id: str
    network_type: str
    mac: str
    mtu: int
    address: str | None
    cidr: str | None = None
    gateway: str | None = None
    dhcp: bool = False


@dataclasses.dataclass(frozen=True)
class InstanceFacts:
    """Everything the formats say about one instance, as the request's port sees it.

    ``address`` is the fixed address the request came from, ``floating_address``
    the floating address translated to it (None without one).
    """

    uuid: str
    name: str
    hostname: str
    project_id: str
    availability_zone: str | None
    launch_index: int
    key_name: str | None
    key_data: str | None
    user_data: bytes | None
    meta: dict[str, str]
    image_id: str | None
    flavor_name: str | None
    address: str
    floating_address: str | None
    ports: tuple[PortFacts, ...]


def hostname_of(display_name: str, uuid: str) -> str:
    """A DNS label made from a server name (lower case, letters, digits and '-', at most 63)."""
    label = re.sub(r"[^a-z0-9-]+", "-", display_name.lower()).strip("-")[:63].rstrip("-")
    return label or f"server-{uuid[:8]}"


def decode_user_data(stored: str | None) -> bytes | None:
    """The bytes of the user data the API stored (base64); None when absent or unreadable."""
    if not stored:
        return None
    try:
        return base64.b64decode(stored, validate=True)
    except (binascii.Error, ValueError):
        # The API refuses such data; a row written some other way is not served half-decoded.
        LOG.error("metadata: stored user data is not base64; serving none")
        return None


def _port_facts(session: sa.orm.Session, ports: list[Port]) -> tuple[PortFacts, ...]:
    addresses = ipv4_addresses(session, [p.id for p in ports])
    networks = {n.id: n for n in session.scalars(sa.select(Network).where(
        Network.id.in_({p.network_id for p in ports})))}
    subnets: dict[str, list[Subnet]] = {}
    for subnet in session.scalars(sa.select(Subnet).where(Subnet.network_id.in_(networks), Subnet.ip_version == 4)):
        subnets.setdefault(subnet.network_id, []).append(subnet)
    found = []
    for port in sorted(ports, key=lambda p: (p.created_at, p.id)):
        network = networks.get(port.network_id)
        address = addresses.get(port.id)
        subnet = next((s for s in subnets.get(port.network_id, [])
                       if address and ipaddress.IPv4Address(address) in ipaddress.ip_network(s.cidr)), None)
        found.append(PortFacts(
            id=port.id, network_id=port.network_id,
            network_type=network.network_type if network is not None else "",
            mac=port.mac_address, mtu=network.mtu if network is not None else 1500, address=address,
            cidr=subnet.cidr if subnet else None, gateway=subnet.gateway_ip if subnet else None,
            dhcp=bool(subnet.enable_dhcp) if subnet else False))
    return tuple(found)


def find_instance(db: Database, network_ids: tuple[str, ...], address: str) -> InstanceFacts | None:
    """The live instance whose port on one of ``network_ids`` holds ``address``, or None.

    ``address`` must be an IPv4 address (anything else is nobody). Raises what
    the database raises when it cannot be read.
    """
    try:
        address = str(ipaddress.IPv4Address(address))
    except ValueError:
        return None
    with db.begin() as session:
        port = session.scalars(
            sa.select(Port).join(AddressAllocation, AddressAllocation.port_id == Port.id)
            .where(Port.network_id.in_(network_ids), AddressAllocation.address == address,
                   Port.device_id.is_not(None))
            .order_by(Port.id)).first()
        if port is None:
            return None
        instance = session.get(Instance, port.device_id)
        if instance is None or instance.deleted:
            return None
        ports = list(session.scalars(sa.select(Port).where(Port.device_id == instance.id)))
        floating = session.scalars(sa.select(FloatingIp.address).where(FloatingIp.port_id == port.id)
                                   .order_by(FloatingIp.address)).first()
        flavor = session.get(Flavor, instance.flavor_id) if instance.flavor_id else None
        return InstanceFacts(
            uuid=instance.id, name=instance.display_name,
            hostname=hostname_of(instance.display_name, instance.id),
            project_id=instance.project_id, availability_zone=instance.availability_zone,
            launch_index=instance.launch_index or 0, key_name=instance.key_name, key_data=instance.key_data,
            user_data=decode_user_data(instance.user_data), meta=dict(instance.metadata_items or {}),
            image_id=instance.image_id, flavor_name=flavor.name if flavor is not None else None,
            address=address, floating_address=floating, ports=_port_facts(session, ports))

