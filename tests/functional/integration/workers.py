"""What the end-to-end tests share: the rows the API writes, and waits on the instance row.

:func:`seed` writes what an operator and the API would have written before a
server is created (a flavor, an image with its file, a classic L2 network
with a subnet, a routed datacenter layout with a segment and its network);
:func:`create_instance` writes the instance row as
``fabric.api.compute.servers.Servers.on_post`` does, before it casts
``schedule_and_build`` (through :mod:`tests.fixtures.instances`).
"""

from __future__ import annotations

import dataclasses
import io
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from fabric import config
from fabric.api import image_store
from fabric.api.bootstrap import ensure_image_service
from fabric.compute import states
from fabric.db import Database
from fabric.db.models import AddressAllocation, Flavor, Image, InstanceFault, Network, Port, Subnet
from fabric.db.types import utcnow
from fabric.ipam.topology import DEFAULT_DATACENTER, Topology
from tests.fixtures.instances import add_instance

PROJECT = "p-e2e"
USER = "u-e2e"
L2_CIDR = "10.20.0.0/24"
#: 8 host bits, 4 tenant bits, 4 segment bits, 8 endpoint bits fill the /8.
DATACENTER_PREFIX = "10.0.0.0/8"


@dataclasses.dataclass
class Seeded:
    flavor_id: str
    big_flavor_id: str
    image_id: str
    l2_network_id: str
    subnet_id: str
    routed_network_id: str
    segment_id: int


def seed(db: Database, settings: config.Settings, hosts: tuple[str, ...]) -> Seeded:
    """The rows a server create needs, the image's bytes uploaded as the Image API stores them
    (into the objectstore ``settings`` point at); ``hosts`` are numbered in the L3 topology."""
    flavor_id, big_flavor_id, image_id = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    l2_id, subnet_id, routed_id = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    ensure_image_service(db)
    data = io.BytesIO(b"\0" * 512)
    stored = image_store.write(settings, db, image_id, data.read, settings.api.max_image_size, length=512)
    topology = Topology(db)
    topology.configure_datacenter(DEFAULT_DATACENTER, DATACENTER_PREFIX, 8, 4, 4, 8)
    for host in hosts:
        topology.add_host(host, DEFAULT_DATACENTER)
    segment = topology.add_segment(PROJECT, "web", DEFAULT_DATACENTER)
    with db.begin() as session:
        session.add(Flavor(id=flavor_id, name=f"e2e-small-{flavor_id[:8]}", vcpus=1, memory_mb=128, disk_gb=1))
        # More RAM than any fake host has, even overcommitted: no valid host.
        session.add(Flavor(id=big_flavor_id, name=f"e2e-huge-{big_flavor_id[:8]}", vcpus=1,
                           memory_mb=10_000_000, disk_gb=1))
        session.add(Image(id=image_id, name="e2e", status="active", visibility="public", disk_format="raw",
                          container_format="bare", owner=PROJECT, **stored))
        session.add(Network(id=l2_id, name="e2e-l2", project_id=PROJECT, network_type="vxlan",
                            segmentation_id=4000 + int(l2_id[:3], 16) % 1000, mtu=1450))
        session.add(Network(id=routed_id, name="e2e-routed", project_id=PROJECT, network_type="routed",
                            segment_id=segment["id"], mtu=1500))
        session.flush()
        session.add(Subnet(id=subnet_id, network_id=l2_id, project_id=PROJECT, ip_version=4, cidr=L2_CIDR,
                           gateway_ip="10.20.0.1", allocation_pools=[], reserved=[], enable_dhcp=True))
    return Seeded(flavor_id, big_flavor_id, image_id, l2_id, subnet_id, routed_id, segment["id"])


def create_instance(db: Database, seeded: Seeded, *, networks: list[str], big: bool = False,
                    name: str = "e2e") -> str:
    """An instance row as the API writes it (:func:`tests.fixtures.instances.add_instance`:
    building/scheduling, no host) of a seeded flavor and image on ``networks``; its id."""
    with db.begin() as session:
        flavor = session.get(Flavor, seeded.big_flavor_id if big else seeded.flavor_id)
        sizes = {"flavor_id": flavor.id, "vcpus": flavor.vcpus, "memory_mb": flavor.memory_mb,
                 "disk_gb": flavor.disk_gb}
    return add_instance(db, display_name=name, project_id=PROJECT, user_id=USER, image_id=seeded.image_id,
                        task_started_at=utcnow(),
                        requested_networks=[{"network_id": n, "port_id": None, "fixed_ip": None} for n in networks],
                        **sizes)


def instance(db: Database, instance_id: str) -> dict[str, Any]:
    return states.get_instance(db, instance_id, include_deleted=True)


def wait_for_instance(db: Database, instance_id: str, condition: Callable[[dict], bool], what: str,
                      *, sleep: Callable[[float], None] = time.sleep, timeout: float = 60.0,
                      workers: Any = ()) -> dict[str, Any]:
    """Poll the instance row until ``condition(row)``; fail (with the workers' logs) at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        row = instance(db, instance_id)
        if condition(row):
            return row
        for worker in workers:
            if worker.popen.poll() is not None:
                pytest.fail(f"{worker.name} exited ({worker.popen.returncode}):\n{worker.log()}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {w.name}\n{w.log()[-4000:]}" for w in workers)
            pytest.fail(f"instance {instance_id} not {what} within {timeout}s; row: "
                        f"{ {k: row[k] for k in ('vm_state', 'task_state', 'host', 'failed_hosts')} }; "
                        f"faults: {faults(db, instance_id)}\n{logs}")
        sleep(0.02)


def faults(db: Database, instance_id: str) -> list[tuple[str | None, int, str]]:
    with db.begin() as session:
        return [(f.host, f.code, f.message) for f in session.scalars(
            sa.select(InstanceFault).where(InstanceFault.instance_id == instance_id).order_by(InstanceFault.id))]


def allocations_of(db: Database, port_ids: list[str]) -> dict[str, str]:
    """port id -> allocated address, for the given ports."""
    with db.begin() as session:
        return dict(session.execute(sa.select(AddressAllocation.port_id, AddressAllocation.address)
                                    .where(AddressAllocation.port_id.in_(port_ids))).all())


def allocation_count(db: Database) -> int:
    """Addresses held by anything but the hosts' DHCP servers."""
    with db.begin() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(AddressAllocation)
                              .where(~AddressAllocation.request_token.startswith("dhcp:")))


def dhcp_ports(db: Database, network_id: str) -> dict[str, str]:
    """host -> address of the network's ``network:dhcp`` ports."""
    with db.begin() as session:
        return dict(session.execute(
            sa.select(Port.host, AddressAllocation.address).join(AddressAllocation, AddressAllocation.port_id == Port.id)
            .where(Port.network_id == network_id, Port.device_owner == "network:dhcp")).all())


def ports_of(db: Database, instance_id: str) -> dict[str, Port]:
    with db.begin() as session:
        ports = session.scalars(sa.select(Port).where(Port.device_id == instance_id)).all()
        session.expunge_all()
        return {p.id: p for p in ports}
