"""IPAM test helpers: a manager on the test database, subnets, and table snapshots."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from fabric import config
from fabric.db.models import (
    AddressAllocation,
    AddressPool,
    Datacenter,
    FreeAddress,
    Network,
    Segment,
    Subnet,
    Tenant,
    TopologyHost,
)
from fabric.ipam.manager import IpamManager

IPAM_TABLES = (Datacenter, TopologyHost, Tenant, Segment, Network, Subnet, AddressPool, FreeAddress,
               AddressAllocation)


def snapshot(db) -> dict[str, list]:
    """Every row of every table IPAM writes, for "nothing changed" assertions."""
    rows = {}
    with db.engine.connect() as conn:
        for model in IPAM_TABLES:
            table = model.__table__
            columns = [c for c in table.c if c.name not in ("created_at", "updated_at")]
            rows[table.name] = sorted(tuple(map(str, row)) for row in conn.execute(sa.select(*columns)))
    return rows


def make_subnet(db, cidr: str, project_id: str = "p1", gateway_ip: str | None = "auto",
                allocation_pools=None, reserved=None) -> str:
    """A network and one subnet row, as the API writes them (validated first)."""
    from fabric.ipam.pools import validate_subnet

    spec = validate_subnet(cidr, gateway_ip, allocation_pools, reserved)
    network_id, subnet_id = str(uuid.uuid4()), str(uuid.uuid4())
    with db.begin() as session:
        session.add(Network(id=network_id, project_id=project_id, network_type="vxlan"))
        session.flush()
        session.add(Subnet(id=subnet_id, network_id=network_id, project_id=project_id,
                           ip_version=spec.ip_version, cidr=spec.cidr, gateway_ip=spec.gateway_ip,
                           allocation_pools=spec.allocation_pools, reserved=spec.reserved))
    return subnet_id


@pytest.fixture
def ipam(db):
    """An IpamManager on the parametrised ``db`` (sqlite, postgresql, mariadb)."""
    manager = IpamManager(config.Settings(), host="test-ipam", db=db)
    yield manager
    manager.cleanup_host()
