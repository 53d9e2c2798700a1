"""IPAM test helpers: a manager on the test database, subnets (:mod:`tests.fixtures.subnets`,
imported from here by the IPAM tests), and table snapshots."""

from __future__ import annotations

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
from tests.fixtures.subnets import make_subnet  # noqa: F401 - the IPAM tests import it from here

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


@pytest.fixture
def ipam(db):
    """An IpamManager on the parametrised ``db`` (sqlite, postgresql, mariadb)."""
    manager = IpamManager(config.Settings(), host="test-ipam", db=db)
    yield manager
    manager.cleanup_host()
