"""Network v2.0 through the real `openstack` CLI against every worker in its own process
(fabric-ipam, -network, -compute, -scheduler, -objectstore, -api) over the real RabbitMQ and
PostgreSQL, fake virt and network drivers: ports (create, set, show, list, delete), a server
booted on a port keeping its address, routers (subnets, external gateway), a subnet pool and
a subnet carved from it, network and subnet set, and a quota refusal; a port as a router's leg. Every step is checked
in what the CLI shows and in the database, not only by its exit status."""

from __future__ import annotations

import sys

import pytest
import sqlalchemy as sa

from fabric.api.bootstrap import bootstrap
from fabric.db.models import AddressAllocation, AddressPool, Port, Router, RouterInterface
from tests.fixtures.api import add_user
from tests.fixtures.cli import openstack_env
from tests.fixtures.processes import fabric_conf, free_port
from tests.functional.api.test_openstack_clients import PASSWORD

pytestmark = [pytest.mark.functional, pytest.mark.slow]

WORKERS = ("ipam", "network", "compute", "scheduler", "objectstore", "api")


def _ips(port: dict) -> list[str]:
    """A port's addresses from ``port show -f json`` (a list of dicts, or osc's text of it)."""
    fixed = port["fixed_ips"]
    if isinstance(fixed, str):
        return sorted(part.split("'")[1] for part in fixed.split("ip_address=")[1:])
    return sorted(ip["ip_address"] for ip in fixed)


def _held(db, port_id: str) -> list[str]:
    with db.begin() as session:
        return sorted(session.scalars(sa.select(AddressAllocation.address).where(AddressAllocation.port_id == port_id)))


def _excluded(db, subnet_id: str) -> list[str]:
    """The addresses the subnet's IPAM pool keeps out of allocation (its gateway)."""
    with db.begin() as session:
        return session.get(AddressPool, subnet_id).definition["excluded"]


def test_ports_routers_pools_and_quotas_through_the_cli(postgres_db, rabbit_vhost, spawn, osc, osc_fails, tmp_path):
    db = postgres_db
    port_number = free_port()
    conf = fabric_conf(tmp_path / "fabric.conf", host="netcli1", api_port=port_number, transport_url=rabbit_vhost,
                       database_url=db.url.render_as_string(hide_password=False),
                       compute={"driver": "fake"}, network={"driver": "fake"}, objectstore={"port": free_port()})
    bootstrap(db, PASSWORD)
    started = {name: spawn([sys.executable, "-m", f"fabric.cmd.{name}", "--config-file", str(conf)],
                           name=f"fabric-{name}") for name in WORKERS}
    for name, worker in started.items():
        worker.wait_for_log(f"Started fabric-{name} on host netcli1", timeout=90)
    auth_url = f"http://127.0.0.1:{port_number}/v3"
    admin = openstack_env(auth_url, "admin", PASSWORD, "admin")
    _, project = add_user(db, "netcli", "member", PASSWORD)
    member = openstack_env(auth_url, "netcli-user", PASSWORD, "netcli")
    osc(admin, "flavor", "create", "--ram", "128", "--vcpus", "1", "--disk", "1", "net.nano")
    (tmp_path / "disk.raw").write_bytes(b"\0" * 65536)
    osc(admin, "image", "create", "--file", str(tmp_path / "disk.raw"), "--disk-format", "raw",
        "--container-format", "bare", "--public", "net-image")
    net = osc(member, "network", "create", "net1")
    sub = osc(member, "subnet", "create", "--network", "net1", "--subnet-range", "10.50.0.0/24", "sub1")

    # --- ports: create, set, show, list --------------------------------------------------------
    port = osc(member, "port", "create", "--network", "net1", "--fixed-ip", "subnet=sub1,ip-address=10.50.0.50",
               "--mac-address", "fa:16:3e:11:22:33", "--security-group", "default", "p1")
    assert (_ips(port), port["mac_address"], port["status"]) == (["10.50.0.50"], "fa:16:3e:11:22:33", "DOWN")
    assert _held(db, port["id"]) == ["10.50.0.50"]
    osc_fails(member, 409, "10.50.0.50", "port", "create", "--network", "net1", "--fixed-ip",
              "ip-address=10.50.0.50", "p-dup")
    osc_fails(member, 400, "zz:16:3e:11:22:33", "port", "create", "--network", "net1", "--mac-address",
              "zz:16:3e:11:22:33", "p-bad")
    osc(member, "port", "set", "--name", "p1b", "--description", "front", "--no-fixed-ip", "--fixed-ip",
        "subnet=sub1,ip-address=10.50.0.60", port["id"], json_out=False)
    shown = osc(member, "port", "show", port["id"])
    assert (shown["name"], shown["description"], _ips(shown)) == ("p1b", "front", ["10.50.0.60"])
    assert _held(db, port["id"]) == ["10.50.0.60"]  # 10.50.0.50 went back to IPAM's pool
    listed = osc(member, "port", "list", "--network", "net1")
    assert [p["ID"] for p in listed] == [port["id"]]

    # --- a server boots on the port and keeps its address; deleting it unbinds the port ---------
    server = osc(member, "server", "create", "--flavor", "net.nano", "--image", "net-image", "--nic",
                 f"port-id={port['id']}", "--wait", "vm1")
    assert server["status"] == "ACTIVE", server.get("fault")
    assert server["addresses"] in ({"net1": ["10.50.0.60"]}, "net1=10.50.0.60")
    bound = osc(member, "port", "show", port["id"])
    assert (bound["device_id"], bound["device_owner"], _ips(bound)) == (server["id"], "compute:nova", ["10.50.0.60"])
    osc_fails(member, 409, "bound to server", "port", "delete", port["id"])
    osc(member, "server", "delete", "--wait", "vm1", json_out=False)
    unbound = osc(member, "port", "show", port["id"])
    assert (unbound["device_id"], unbound["device_owner"], _ips(unbound)) == ("", "", ["10.50.0.60"])
    assert _held(db, port["id"]) == ["10.50.0.60"]
    osc(member, "port", "delete", port["id"], json_out=False)
    # What is left on the network is the DHCP server's port the server's host made.
    left = osc(member, "port", "list", "--network", "net1", "--long")
    assert [p["Device Owner"] for p in left] == ["network:dhcp"]
    with db.begin() as session:
        assert session.get(Port, port["id"]) is None
        assert session.scalar(sa.select(sa.func.count()).select_from(AddressAllocation)
                              .where(AddressAllocation.address == "10.50.0.60")) == 0

    # --- routers: a subnet, an external gateway, refusals, removal -------------------------------
    osc(admin, "network", "create", "--external", "ext-net")
    ext_sub = osc(admin, "subnet", "create", "--network", "ext-net", "--subnet-range", "203.0.113.0/24",
                  "--no-dhcp", "ext-sub")
    router = osc(member, "router", "create", "r1")
    # A host carries a network (and realises its routers) only while a guest of it is there.
    holder = osc(member, "server", "create", "--flavor", "net.nano", "--image", "net-image", "--nic",
                 "net-id=net1", "--wait", "vm2")
    assert holder["status"] == "ACTIVE", holder.get("fault")
    mark = started["network"].log_mark()
    osc(member, "router", "add", "subnet", "r1", "sub1", json_out=False)
    started["network"].wait_for_log("network: 1 router(s) realised on netcli1", since=mark)
    legs = osc(member, "port", "list", "--router", "r1", "--long")
    assert [(p["Device Owner"], _ips({"fixed_ips": p["Fixed IP Addresses"]})) for p in legs] == [
        ("network:router_interface", ["10.50.0.1"])]
    osc_fails(member, 409, "already attached to router", "router", "add", "subnet", "r1", "sub1")
    osc(member, "router", "set", "--external-gateway", "ext-net", "r1", json_out=False)
    shown = osc(member, "router", "show", "r1")
    gateway = shown["external_gateway_info"]
    assert gateway["network_id"] == osc(admin, "network", "show", "ext-net")["id"]
    assert gateway["external_fixed_ips"] == [{"subnet_id": ext_sub["id"], "ip_address": "203.0.113.2"}]
    osc_fails(member, 409, "still has 1 interface(s)", "router", "delete", "r1")
    osc_fails(member, 409, "attached to router", "subnet", "delete", "sub1")
    mark = started["network"].log_mark()
    osc(member, "router", "remove", "subnet", "r1", "sub1", json_out=False)
    started["network"].wait_for_log("network: 0 router(s) realised on netcli1", since=mark)
    osc(member, "server", "delete", "--wait", "vm2", json_out=False)
    # A port as the router's leg keeps its address; removing the leg deletes the port and frees it.
    leg_port = osc(member, "port", "create", "--network", "net1", "--fixed-ip", "subnet=sub1,ip-address=10.50.0.9",
                   "p-leg")
    osc(member, "router", "add", "port", "r1", leg_port["id"], json_out=False)
    legs = osc(member, "port", "list", "--router", "r1", "--device-owner", "network:router_interface", "--long")
    assert [(p["ID"], _ips({"fixed_ips": p["Fixed IP Addresses"]})) for p in legs] == [(leg_port["id"], ["10.50.0.9"])]
    osc(member, "router", "remove", "port", "r1", leg_port["id"], json_out=False)
    assert osc(member, "port", "list", "--router", "r1", "--device-owner", "network:router_interface") == []
    assert _held(db, leg_port["id"]) == []
    osc(member, "router", "unset", "--external-gateway", "r1", json_out=False)
    assert osc(member, "router", "show", "r1")["external_gateway_info"] in (None, "null", "")
    osc(member, "router", "delete", "r1", json_out=False)
    assert osc(member, "router", "list") == []
    with db.begin() as session:
        assert session.get(Router, router["id"]) is None
        assert session.scalar(sa.select(sa.func.count()).select_from(RouterInterface)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(Port).where(
            Port.device_owner.like("network:router%"))) == 0

    # --- a subnet pool and a subnet carved from it ------------------------------------------------
    pool = osc(member, "subnet", "pool", "create", "--pool-prefix", "10.90.0.0/16", "--default-prefix-length", "24",
               "pool1")
    assert (pool["prefixes"] in (["10.90.0.0/16"], "10.90.0.0/16"), pool["default_prefixlen"]) == (True, 24)
    carved = osc(member, "subnet", "create", "--network", "net1", "--subnet-pool", "pool1", "sub-pool")
    assert (carved["cidr"], carved["subnetpool_id"], carved["gateway_ip"]) == ("10.90.0.0/24", pool["id"],
                                                                                "10.90.0.1")
    second = osc(member, "subnet", "create", "--network", "net1", "--subnet-pool", "pool1", "--prefix-length", "26",
                 "sub-pool2")
    assert second["cidr"] == "10.90.1.0/26"

    # --- network set / subnet set ----------------------------------------------------------------
    osc(member, "network", "set", "--name", "net1b", "--description", "tier one", "--disable", "net1",
        json_out=False)
    shown = osc(member, "network", "show", net["id"])
    assert (shown["name"], shown["description"], shown["admin_state_up"]) == ("net1b", "tier one", False)
    osc(member, "subnet", "set", "--name", "sub1b", "--dns-nameserver", "192.0.2.53", sub["id"], json_out=False)
    shown = osc(member, "subnet", "show", sub["id"])
    assert (shown["name"], shown["dns_nameservers"] in (["192.0.2.53"], "192.0.2.53")) == ("sub1b", True)
    osc_fails(member, 409, "Gateway ip 10.50.0.254 conflicts with allocation pool 10.50.0.2-10.50.0.254", "subnet",
              "set", "--gateway", "10.50.0.254", sub["id"])
    # No gateway, then the first address again (every other one is in the allocation pool): the
    # IPAM pool's stored definition keeps whichever is the gateway out of allocation.
    osc(member, "subnet", "set", "--gateway", "none", sub["id"], json_out=False)
    assert osc(member, "subnet", "show", sub["id"])["gateway_ip"] in (None, "None", "")
    assert _excluded(db, sub["id"]) == []
    osc(member, "subnet", "set", "--gateway", "10.50.0.1", sub["id"], json_out=False)
    assert osc(member, "subnet", "show", sub["id"])["gateway_ip"] == "10.50.0.1"
    assert _excluded(db, sub["id"]) == ["10.50.0.1"]

    # --- a quota refusal ---------------------------------------------------------------------------
    osc(admin, "quota", "set", "--ports", "1", project, json_out=False)
    first = osc(member, "port", "create", "--network", "net1b", "q1")
    osc_fails(member, 409, "Quota exceeded for port", "port", "create", "--network", "net1b", "q2")
    mine = [p["ID"] for p in osc(member, "port", "list", "--network", "net1b", "--long")
            if p["Device Owner"] != "network:dhcp"]
    assert mine == [first["id"]]
