"""What a plug reads (:meth:`fabric.network.api.NetworkService.plug_port`, once per NIC of every
build): the network's subnets once, for the host's DHCP address on it, the IPv6 service its
bridge carries and the port's SLAAC address, which had been three reads of the same rows."""

from __future__ import annotations

import datetime

import pytest
import sqlalchemy as sa

from fabric.context import RequestContext
from fabric.db.models import Subnet
from fabric.network import dbstate
from fabric.network.api import NetworkService
from fabric.network.ipv6 import slaac_address
from tests.unit.network.test_host_networks import add_network
from tests.unit.rpc.conftest import settings  # noqa: F401 - fixture


class _Worker:
    """The network worker's RPC API as the plug calls it: what it was asked."""

    def __init__(self) -> None:
        self.plugs: list[tuple[str, dict, dict]] = []

    def plug(self, ctx, host, endpoint, network=None):
        self.plugs.append((host, endpoint, network))
        return {"device": "tap-test"}


@pytest.fixture
def dual_stack(sqlite_db):
    """net-s (add_network) with a SLAAC subnet beside its IPv4 one, and a newer IPv4 subnet."""
    add_network(sqlite_db)
    later = datetime.datetime(2030, 1, 1)
    with sqlite_db.begin() as session:
        session.add(Subnet(id="sub-6", network_id="net-s", project_id="proj", ip_version=6, cidr="fd00:62::/64",
                           ipv6_address_mode="slaac", ipv6_ra_mode="slaac"))
        session.add(Subnet(id="sub-s2", network_id="net-s", project_id="proj", ip_version=4,
                           cidr="10.63.0.0/24", enable_dhcp=False, created_at=later))
    return sqlite_db


def test_a_plug_reads_the_networks_subnets_once_and_tells_the_host_what_a_full_read_would(dual_stack, settings):  # noqa: F811
    service = NetworkService(dual_stack, transport=None)
    service.rpcapi = worker = _Worker()
    subnet_reads: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        if "FROM subnets" in statement:
            subnet_reads.append(statement)

    sa.event.listen(dual_stack.engine, "before_cursor_execute", count)
    try:
        assert service.plug_port(RequestContext.admin(), "guest-2") == {"device": "tap-test"}
    finally:
        sa.event.remove(dual_stack.engine, "before_cursor_execute", count)

    assert len(subnet_reads) == 1, subnet_reads
    [(host, endpoint, network)] = worker.plugs
    assert host == "h2"
    # The DHCP address on the oldest IPv4 subnet (DHCP on), the bridge's SLAAC service, the port's SLAAC address.
    assert (network["host_address"], network["dhcp"]) == ("10.62.0.3/24", True)
    assert (network["ipv6_address"], network["ipv6_mode"]) == (
        slaac_address("fd00:62::/64", "02:00:00:00:62:fe") + "/64", "slaac")
    assert endpoint["address6"] == slaac_address("fd00:62::/64", "02:00:00:00:62:02")
    # What the host's full read (its reconciliation) holds for the same network and port.
    state = dbstate.host_state(dual_stack, "h2", settings.replace(default={"host": "h2"}))
    assert state.networks["net-s"].to_dict() == network
    assert state.endpoints["guest-2"].to_dict() == endpoint
