"""A subnet's DHCP turned on or off reaches the hosts: the API tells every network worker
(``network_changed``, only when it changed) and a worker carrying the network applies its
spec as the database now says; one not carrying it does nothing."""

from __future__ import annotations

from fabric.context import RequestContext
from fabric.network.drivers.fake import FakeDriver
from fabric.network.manager import NetworkManager
from fabric.network.model import NetworkSpec
from tests.unit.api.test_ports import tenant_network

N = "/networking/v2.0"


def test_the_hosts_are_told_when_dhcp_turns_off_or_on_and_only_then(api):
    member = api.make_member()
    network_id, subnet_id = tenant_network(api, member, "10.71.0.0/24")

    def put(**subnet):
        return api.app.put_json(f"{N}/subnets/{subnet_id}", {"subnet": subnet}, headers=member.headers).json

    assert put(enable_dhcp=False)["subnet"]["enable_dhcp"] is False
    assert [kw["network_id"] for kw in api.recorder.named("network_changed")] == [network_id]
    put(enable_dhcp=False, name="renamed")  # unchanged: nothing to tell
    put(description="d")
    assert len(api.recorder.named("network_changed")) == 1
    put(enable_dhcp=True)
    assert [kw["network_id"] for kw in api.recorder.named("network_changed")] == [network_id, network_id]


class RecordingDriver(FakeDriver):
    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.applied: list[NetworkSpec] = []

    def setup_network(self, network: NetworkSpec) -> None:
        self.applied.append(network)
        super().setup_network(network)


def test_a_worker_carrying_the_network_applies_its_spec_afresh(api):
    member = api.make_member()
    network_id, _ = tenant_network(api, member, "10.72.0.0/24")
    other_id, _ = tenant_network(api, member, "10.73.0.0/24", "other")
    manager = NetworkManager(api.settings, host="h1", db=api.db, driver=RecordingDriver(api.settings))
    manager.network_changed(RequestContext.admin(), network_id=network_id)
    assert manager.driver.applied == []  # h1 does not carry it
    manager.driver.setup_network(NetworkSpec(id=network_id, network_type="vxlan", segmentation_id=1000,
                                             host_address="10.72.0.2/24", dhcp=True))
    manager.network_changed(RequestContext.admin(), network_id=other_id)
    manager.network_changed(RequestContext.admin(), network_id=network_id)
    [first, again] = manager.driver.applied
    assert again.id == network_id and again != first
    assert manager.driver.state.networks[network_id] == again  # what the database says (no DHCP port on h1: off)
    assert again.dhcp is False
