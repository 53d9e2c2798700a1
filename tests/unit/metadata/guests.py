"""Database rows of guests as the API and compute write them, for the metadata tests (instance
rows through :mod:`tests.fixtures.instances`)."""

from __future__ import annotations

import base64
import uuid

from fabric.db import Database
from fabric.db.models import AddressAllocation, AddressPool, FloatingIp, Network, Port, Subnet
from tests.fixtures.instances import add_instance

PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test@example"


def add_network(db: Database, network_id: str, cidr: str | None = "10.30.0.0/24", network_type: str = "vxlan",
                segmentation_id: int | None = None, project: str = "proj-a", gateway: str | None = None,
                dhcp: bool = True) -> None:
    """A network (and its IPv4 subnet and the subnet's pool when ``cidr`` is given)."""
    with db.begin() as session:
        session.add(Network(id=network_id, project_id=project, network_type=network_type,
                            segmentation_id=segmentation_id, mtu=1450))
        pool_id = f"pool-{network_id}"
        if cidr is not None:
            session.flush()
            session.add(Subnet(id=f"sub-{network_id}", network_id=network_id, project_id=project, ip_version=4,
                               cidr=cidr, gateway_ip=gateway, enable_dhcp=dhcp))
            session.flush()
            session.add(AddressPool(id=pool_id, kind="subnet", subnet_id=f"sub-{network_id}", definition={},
                                    size_limit=250))
        else:
            session.add(AddressPool(id=pool_id, kind="segment", definition={}, size_limit=250))


def add_guest(db: Database, network_id: str, address: str, mac: str, name: str = "vm1",
              user_data: bytes | None = None, key: tuple[str, str] | None = None, project: str = "proj-a",
              floating: str | None = None, deleted: bool = False, meta: dict | None = None,
              launch_index: int = 0, binding: dict | None = None) -> str:
    """An instance with one port on ``network_id`` holding ``address``, plugged on host h1
    (``binding``: how, default a tap); returns the instance id."""
    instance_id = add_instance(db, display_name=name, project_id=project, availability_zone="nova",
                               key_name=key[0] if key else None, key_data=key[1] if key else None,
                               launch_index=launch_index, metadata_items=meta or {}, deleted=deleted,
                               user_data=base64.b64encode(user_data).decode() if user_data is not None else None,
                               vm_state="deleted" if deleted else "active", task_state=None)
    port_id = str(uuid.uuid4())
    with db.begin() as session:
        session.add(Port(id=port_id, network_id=network_id, project_id=project, mac_address=mac,
                         device_id=instance_id, device_owner="compute:nova", host="h1", binding=binding or {"kind": "tap"}))
        session.flush()
        session.add(AddressAllocation(pool_id=f"pool-{network_id}", address=address, request_token=port_id,
                                      port_id=port_id))
        if floating:
            session.add(FloatingIp(address=floating, project_id=project, floating_network_id=network_id,
                                   port_id=port_id, fixed_address=address, host="h1"))
    return instance_id
