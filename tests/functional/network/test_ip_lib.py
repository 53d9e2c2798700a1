"""The pyroute2 wrapper: idempotent ensures, forgiving deletes, errors as FabricErrors."""

from __future__ import annotations

import errno

import pytest

from fabric import exception
from fabric.network.kernel import Kernel
from tests.fixtures.netns import in_ns


def test_missing_namespace_is_a_clear_error():
    with pytest.raises(exception.NamespaceNotFound, match="'fabt-no-such-ns'"):
        Kernel("fabt-no-such-ns")


def test_ensures_are_idempotent_and_deletes_forgive_absence(netns):
    ns = netns("k")
    kernel = Kernel(ns)
    for _ in range(2):
        kernel.ensure_bridge("fabbk")
        kernel.ensure_tap("fabtk", master="fabbk", mtu=1400)
        kernel.ensure_vxlan("fabxk", 42, "192.168.77.1", master="fabbk")
        kernel.add_flood_destination("fabxk", "192.168.77.2")
        kernel.ensure_address("fabbk", "10.5.0.1/24")
        kernel.ensure_route("10.6.0.0/16", via="10.5.0.9")
    links = {lk["name"]: lk for lk in kernel.links("fab")}
    assert set(links) == {"fabbk", "fabtk", "fabxk"}
    assert links["fabtk"]["master"] == "fabbk" and links["fabtk"]["mtu"] == 1400 and links["fabtk"]["up"]
    assert (links["fabxk"]["vni"], links["fabxk"]["kind"]) == (42, "vxlan")
    assert kernel.flood_destinations("fabxk") == ["192.168.77.2"]
    assert kernel.addresses("fabbk") == ["10.5.0.1/24"]
    assert kernel.routes() == [{"dst": "10.6.0.0/16", "via": "10.5.0.9", "dev": "fabbk"}]
    assert "proto 176" in in_ns(ns, "ip", "route", "show", "10.6.0.0/16").stdout

    # The same VXLAN device asked for again is kept (same index, same FDB entries) ...
    kernel.ensure_vxlan("fabxk", 42, "192.168.77.1", master="fabbk")
    assert kernel.link("fabxk")["index"] == links["fabxk"]["index"]
    assert kernel.flood_destinations("fabxk") == ["192.168.77.2"]
    # ... and one asked for with another VNI is replaced, not duplicated.
    kernel.ensure_vxlan("fabxk", 43, "192.168.77.1", master="fabbk")
    assert [lk["vni"] for lk in kernel.links("fabx")] == [43]

    kernel.add_flood_destination("fabxk", "192.168.77.2")
    kernel.delete_route("10.6.0.0/16")
    kernel.delete_route("10.6.0.0/16")
    kernel.remove_flood_destination("fabxk", "192.168.77.2")
    kernel.remove_flood_destination("fabxk", "192.168.77.2")
    kernel.remove_address("fabbk", "10.5.0.1/24")
    kernel.remove_address("fabbk", "10.5.0.1/24")
    assert kernel.delete_link("fabtk") is True
    assert kernel.delete_link("fabtk") is False
    assert kernel.routes() == [] and kernel.flood_destinations("fabxk") == [] and kernel.addresses("fabbk") == []


def test_kernel_errors_name_the_operation_object_and_errno(netns):
    kernel = Kernel(netns("k"))
    with pytest.raises(exception.KernelError, match=r"link up on fabnothere in netns .*errno 19") as caught:
        kernel.set_up("fabnothere")
    assert caught.value.fields["errno"] == errno.ENODEV
    with pytest.raises(exception.Invalid, match="interface name 'much-too-long-name'"):
        kernel.ensure_bridge("much-too-long-name")
    with pytest.raises(exception.KernelError, match="no such sysctl"):
        kernel.set_sysctl("net/ipv4/conf/fabnothere/proxy_arp", "1")
    with pytest.raises(exception.KernelError, match="nft"):
        kernel.execute(["nft", "add", "rule", "ip", "nosuchtable", "x", "drop"])
