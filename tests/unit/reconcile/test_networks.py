"""Network drift on the fake driver (the worker's bookkeeping against the database), and the
nftables rule counting the linux driver's report uses. The kernel itself is covered on real
hosts in tests/functional/cloud/test_reconcile.py."""

from __future__ import annotations

import dataclasses

import pytest
import sqlalchemy as sa

from fabric import exception
from fabric.context import RequestContext
from fabric.db.models import AddressAllocation, AddressPool, Datacenter, Network, Port, Subnet, TopologyHost
from fabric.network import nat
from fabric.network.manager import NetworkManager
from fabric.network.model import EndpointSpec, HostState, NetworkSpec
from fabric.network.naming import Names
from fabric.reconcile.networks import _rule_counts


@pytest.fixture
def manager(sqlite_db, settings):  # noqa: F811 - the RPC tests' settings fixture
    with sqlite_db.begin() as session:
        session.add(Datacenter(id=1, name="default", prefix="10.64.0.0/16", host_bits=4, tenant_bits=4,
                               segment_bits=4, endpoint_bits=4))
        session.flush()
        session.add_all([TopologyHost(datacenter_id=1, name="h1", number=1, tunnel_address="192.168.0.1"),
                         TopologyHost(datacenter_id=1, name="h2", number=2, tunnel_address="192.168.0.2")])
        session.add(Network(id="net-x", project_id="proj", network_type="vxlan", segmentation_id=77))
        session.flush()
        session.add(Subnet(id="sub-x", network_id="net-x", project_id="proj", ip_version=4, cidr="10.30.0.0/24"))
        session.flush()
        session.add_all([
            Port(id="p-x", network_id="net-x", project_id="proj", mac_address="02:00:00:00:00:02", host="h1"),
            Port(id="p-d", network_id="net-x", project_id="proj", mac_address="02:00:00:00:00:03", host="h1",
                 device_owner="network:dhcp"),
            AddressPool(id="sub-x", kind="subnet", subnet_id="sub-x", definition={}, size_limit=253),
        ])
        session.flush()
        session.add_all([
            AddressAllocation(pool_id="sub-x", address="10.30.0.5", request_token="b", port_id="p-x"),
            AddressAllocation(pool_id="sub-x", address="10.30.0.2", request_token="c", port_id="p-d"),
        ])
    made = NetworkManager(settings.replace(default={"host": "h1"}, network={"tunnel_address": "192.168.0.1"}),
                          db=sqlite_db)
    made.init_host()
    return made


def _kinds(report: dict) -> list[tuple[str, str, str]]:
    return sorted((f["kind"], f["what"], f["ident"]) for f in report["findings"])


def test_a_converged_host_reports_nothing(manager):
    assert manager.reconcile_networks(RequestContext.admin()) == {"host": "h1", "findings": []}


def test_an_endpoint_the_worker_lost_is_stale_and_plugged_again(manager):
    ctx = RequestContext.admin()
    lost = manager.driver.state.endpoints.pop("p-x")
    assert _kinds(manager.reconcile_networks(ctx)) == [("stale", "endpoint", "p-x")]
    plugs = manager.driver.calls.get("apply_endpoint", 0)

    fixed = manager.reconcile_networks(ctx, {"stale": True})
    assert [f["fixed"] for f in fixed["findings"]] == [True]
    assert manager.driver.state.endpoints["p-x"] == lost
    assert manager.driver.calls["apply_endpoint"] > plugs  # through the driver's plug
    assert manager.reconcile_networks(ctx)["findings"] == []


def test_an_endpoint_and_a_network_of_no_database_row_are_orphans_removed_by_the_converge(manager):
    ctx = RequestContext.admin()
    manager.driver.setup_network(NetworkSpec(id="net-old", network_type="vxlan", segmentation_id=99))
    manager.driver.plug(EndpointSpec(id="p-old", network_id="net-old", mac="02:00:00:00:00:09"))
    assert _kinds(manager.reconcile_networks(ctx)) == [("orphan", "endpoint", "p-old"),
                                                       ("orphan", "network", "net-old")]
    syncs = manager.driver.calls["sync"]
    manager.reconcile_networks(ctx, {"stale": True, "unsynced": True})  # not the kind that was named
    assert "p-old" in manager.driver.state.endpoints and manager.driver.calls["sync"] == syncs

    fixed = manager.reconcile_networks(ctx, {"orphans": True})
    assert all(f["fixed"] for f in fixed["findings"])
    assert manager.driver.calls["sync"] == syncs + 1
    assert "p-old" not in manager.driver.state.endpoints and "net-old" not in manager.driver.state.networks
    assert manager.reconcile_networks(ctx)["findings"] == []


def test_a_network_held_with_other_settings_is_unsynced_and_applied_again(manager):
    ctx = RequestContext.admin()
    wanted = manager.driver.state.networks["net-x"]
    manager.driver.state.networks["net-x"] = dataclasses.replace(wanted, mtu=1300)
    [finding] = manager.reconcile_networks(ctx)["findings"]
    assert (finding["kind"], finding["what"], finding["ident"]) == ("unsynced", "network", "net-x")
    assert "mtu=1300" in finding["detail"]
    manager.reconcile_networks(ctx, {"unsynced": True})
    assert manager.driver.state.networks["net-x"] == wanted
    assert manager.reconcile_networks(ctx)["findings"] == []


def test_a_port_added_to_the_database_is_stale_until_fixed_and_the_periodic_report_logs_it(manager, caplog):
    with manager.db.begin() as session:
        session.add(Port(id="p-new", network_id="net-x", project_id="proj", mac_address="02:00:00:00:00:07",
                         host="h1"))
    with caplog.at_level("WARNING", logger="fabric.network.manager"):
        assert manager.report_network_drift(RequestContext.admin()) == 1
    assert [r.getMessage() for r in caplog.records if "drift networks" in r.getMessage()] == [
        "drift networks on h1: h1: stale endpoint p-new: in the database, not held by the network worker"]
    assert "p-new" not in manager.driver.state.endpoints  # the periodic report fixes nothing
    manager.reconcile_networks(RequestContext.admin(), {"stale": True})
    assert "p-new" in manager.driver.state.endpoints
    with manager.db.begin() as session:
        session.execute(sa.delete(Port).where(Port.id == "p-new"))


def test_bad_fix_flags_are_refused_by_name(manager):
    with pytest.raises(exception.Invalid, match="stale='yes'"):
        manager.reconcile_networks(RequestContext.admin(), {"stale": "yes"})
    with pytest.raises(exception.Invalid, match="everything"):
        manager.reconcile_networks(RequestContext.admin(), {"everything": True})


def test_rule_counts_follow_the_ruleset_the_driver_writes():
    from fabric.network.model import FloatingSpec

    state = HostState(networks={"n1": NetworkSpec(id="n1", network_type="vxlan", segmentation_id=5),
                                "n2": NetworkSpec(id="n2", network_type="vxlan", segmentation_id=6)},
                      floating={"172.31.0.1": FloatingSpec("172.31.0.1", "10.0.0.5")})
    counts = _rule_counts(nat.build_ruleset(Names("fab"), state))
    assert counts == {"prerouting": 1, "output": 1, "postrouting": 1, "forward": 2}
