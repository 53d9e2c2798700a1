"""Guests fetch their own metadata from 169.254.169.254 through the Linux driver, on the real kernel.

A namespace stands for each guest, plugged into a simulated host (a namespace
running the Linux driver) like a guest's NIC; the rows the API and compute
would write are in SQLite. The client is an ordinary HTTP client run inside
the guest's namespace, so the server sees exactly what a guest's request
looks like on the wire. The test process runs the server's green threads:
each client runs off the hub (``tpool``) so the hub can serve it meanwhile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from eventlet import tpool

from fabric.metadata import METADATA_ADDRESS
from fabric.network.model import EndpointSpec, HostSpec, NetworkSpec
from tests.fixtures.netns import in_ns, ping_eventually
from tests.functional.network.test_routed import LAYOUT, routed_network, routed_spec
from tests.unit.metadata.guests import PUBKEY, add_guest, add_network

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tools"))
import guest_image  # noqa: E402

URL = f"http://{METADATA_ADDRESS}"
SCRIPT = b"#!/bin/sh\necho from user-data\n"

#: An HTTP client for inside a guest's namespace: prints [status, body]; never uses a proxy.
CLIENT = """
import json, sys, urllib.error, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
request = urllib.request.Request(sys.argv[1], headers=json.loads(sys.argv[2]))
try:
    with opener.open(request, timeout=10) as response:
        print(json.dumps([response.status, response.read().decode()]))
except urllib.error.HTTPError as error:
    print(json.dumps([error.code, error.read().decode()]))
"""

_NO_PROXY_ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, env=_NO_PROXY_ENV)


def fetch(ns: str, path: str, headers: dict | None = None) -> tuple[int, str]:
    """GET ``path`` from the metadata address inside guest namespace ``ns``."""
    done = tpool.execute(_run, ["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, URL + path,
                                json.dumps(headers or {})])
    assert done.returncode == 0, done.stderr
    status, body = json.loads(done.stdout)
    return status, body


def wget(ns: str, path: str) -> str:
    """What busybox wget (the guest image's client) gets from ``path``.

    No ``-T``: Debian 12's static busybox wget crashes (SIGSEGV) whenever ``-T`` is given.
    """
    done = tpool.execute(_run, ["ip", "netns", "exec", ns, "busybox", "wget", "-q", "-O", "-",
                                URL + path])
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_guests_on_two_l2_networks_with_equal_addresses_each_get_their_own(netns, simulated_host, sqlite_db):
    add_network(sqlite_db, "net-a", segmentation_id=301)
    add_network(sqlite_db, "net-b", segmentation_id=302, project="proj-b")
    mine = add_guest(sqlite_db, "net-a", "10.30.0.5", "02:00:00:00:0a:05", name="vm-a", user_data=SCRIPT,
                     key=("mykey", PUBKEY))
    theirs = add_guest(sqlite_db, "net-b", "10.30.0.5", "02:00:00:00:0b:05", name="vm-b", project="proj-b")

    host = netns("h1")
    driver = simulated_host(host, "h1", "192.168.77.1")
    driver.serve_metadata(sqlite_db)
    guests = {}
    for name, vni, mac, network in (("a", 301, "02:00:00:00:0a:05", "net-a"), ("b", 302, "02:00:00:00:0b:05", "net-b"),
                                    ("x", 301, "02:00:00:00:0a:63", "net-a")):
        driver.setup_network(NetworkSpec(id=network, network_type="vxlan", segmentation_id=vni,
                                         host_address="10.30.0.2/24"))
        ns = guests[name] = netns(f"g{name}")
        address = "10.30.0.99" if name == "x" else "10.30.0.5"
        driver.plug(EndpointSpec(f"ep-{name}", network, mac, address=address, kind="veth", netns=ns))
        netns.configure_endpoint(ns, f"{address}/24")
    # As the guest image does: through its DHCP server (the bridge's address); and on-link.
    in_ns(guests["a"], "ip", "route", "add", f"{METADATA_ADDRESS}/32", "via", "10.30.0.2")
    in_ns(guests["b"], "ip", "route", "add", f"{METADATA_ADDRESS}/32", "dev", "eth0")
    in_ns(guests["x"], "ip", "route", "add", f"{METADATA_ADDRESS}/32", "via", "10.30.0.2")
    bridges = {driver.bridge_of(driver.state.networks[n]): (n,) for n in ("net-a", "net-b")}
    assert driver.describe()["metadata"] == bridges

    status, body = fetch(guests["a"], "/openstack/latest/meta_data.json")
    assert status == 200
    doc = json.loads(body)
    assert (doc["uuid"], doc["name"], doc["public_keys"]) == (mine, "vm-a", {"mykey": PUBKEY})
    assert wget(guests["a"], "/openstack/latest/user_data") == SCRIPT.decode()
    assert wget(guests["a"], "/latest/meta-data/public-keys/0/openssh-key") == PUBKEY
    assert wget(guests["a"], "/latest/meta-data/local-ipv4") == "10.30.0.5"

    # Same address, other network: its own instance, never the first one's.
    status, body = fetch(guests["b"], "/openstack/latest/meta_data.json")
    assert status == 200 and json.loads(body)["uuid"] == theirs
    assert fetch(guests["b"], "/openstack/latest/user_data")[0] == 404

    # Claiming to be someone else gets nothing; an address no instance holds gets nothing.
    status, body = fetch(guests["b"], "/openstack/latest/meta_data.json", {"X-Instance-ID": mine})
    assert status == 403 and mine not in body
    status, body = fetch(guests["x"], "/openstack/latest/meta_data.json", {"X-Forwarded-For": "10.30.0.5"})
    assert status == 403 and mine not in body
    status, body = fetch(guests["x"], "/openstack/latest/meta_data.json")
    assert status == 404 and mine not in body

    # A bridge deleted behind fabric's back and made again by a reconcile is a new
    # device under the old name: the listener follows it.
    in_ns(host, "ip", "link", "del", driver.bridge_of(driver.state.networks["net-a"]))
    driver.sync(driver.state)
    assert json.loads(fetch(guests["a"], "/openstack/latest/meta_data.json")[1])["uuid"] == mine

    # Tearing a network down closes its listener; the other keeps serving.
    driver.teardown_network("net-b")
    assert driver.describe()["metadata"] == {driver.bridge_of(driver.state.networks["net-a"]): ("net-a",)}
    assert json.loads(fetch(guests["a"], "/openstack/latest/meta_data.json")[1])["uuid"] == mine


def test_a_guest_on_a_routed_network_gets_its_own(netns, simulated_host, sqlite_db):
    network = routed_network(1, 1)
    address = str(LAYOUT.encode(1, 1, 1, 2))
    add_network(sqlite_db, network.id, cidr=None, network_type="routed")
    mine = add_guest(sqlite_db, network.id, address, "02:00:00:01:01:02", name="routed-vm")

    host = netns("h1")
    driver = simulated_host(host, "h1", "192.168.77.1")
    driver.set_routed(routed_spec(1))
    driver.setup_network(network)
    driver.serve_metadata(sqlite_db)
    guest = netns("gr")
    driver.plug(EndpointSpec("ep-r", network.id, "02:00:00:01:01:02", address=address, kind="veth", netns=guest))
    netns.configure_endpoint(guest, f"{address}/{LAYOUT.prefix.prefixlen}", gateway=str(LAYOUT.host_gateway(1)))
    assert driver.describe()["metadata"] == {driver.names.endpoint("ep-r"): (network.id,)}

    status, body = fetch(guest, "/openstack/latest/meta_data.json")
    assert status == 200 and json.loads(body)["uuid"] == mine
    doc = json.loads(fetch(guest, "/openstack/latest/network_data.json")[1])
    assert doc["networks"][0]["ip_address"] == address and doc["networks"][0]["netmask"] == "255.255.255.255"

    # Unplugged, then plugged again (a new device under the same name): served again. The
    # last unplug took the network down here, so the plug brings it back first, as the
    # worker's plug does.
    driver.unplug("ep-r")
    assert driver.describe()["metadata"] == {}
    driver.setup_network(network)
    driver.plug(EndpointSpec("ep-r", network.id, "02:00:00:01:01:02", address=address, kind="veth", netns=guest))
    netns.configure_endpoint(guest, f"{address}/{LAYOUT.prefix.prefixlen}", gateway=str(LAYOUT.host_gateway(1)))
    assert fetch(guest, "/latest/meta-data/local-ipv4") == (200, address)

    driver.remove_all()
    assert driver.describe()["metadata"] == {}
    assert METADATA_ADDRESS not in in_ns(host, "ip", "-4", "-o", "addr", "show", "dev", "lo").stdout


def image_scripts(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    """The guest image's udhcpc and metadata scripts, runnable in a namespace: (console, paths).

    Paths the guest owns (/dev/console, appended to; /run/metadata) point into ``tmp_path``.
    """
    console = tmp_path / "console"
    console.touch()
    scripts = {}
    for name, text in (("udhcpc", guest_image.UDHCPC_SCRIPT), ("metadata", guest_image.render_metadata_script())):
        path = scripts[name] = tmp_path / name
        path.write_text(text.replace("> /dev/console", f">> {console}").replace("/run/metadata", str(tmp_path / "md")))
        path.chmod(0o755)
    return console, scripts


def take_dhcp(ns: str, script: Path) -> None:
    """One DHCP exchange on ``ns``'s eth0 with the guest image's own udhcpc script."""
    in_ns(ns, "ip", "link", "set", "eth0", "up")
    done = tpool.execute(_run, ["ip", "netns", "exec", ns, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f",
                                "-t", "5", "-T", "1", "-A", "1", "-s", str(script)])
    assert done.returncode == 0, done.stderr


def test_a_routed_guest_takes_a_32_by_dhcp_then_reaches_its_gateway_another_host_and_its_metadata(
        netns, simulated_host, sqlite_db, tmp_path):
    """The guest image's udhcpc script on a routed network: a /32 lease whose classless static
    routes (the gateway on-link, the default via it) carry it to another host's guest."""
    network = routed_network(1, 1)
    addresses = {h: str(LAYOUT.encode(h, 1, 1, 2)) for h in (1, 2)}
    gateways = {h: str(LAYOUT.host_gateway(h)) for h in (1, 2)}
    add_network(sqlite_db, network.id, cidr=None, network_type="routed")
    mine = add_guest(sqlite_db, network.id, addresses[1], "02:00:00:01:01:12", name="routed-dhcp-vm")
    hosts = {1: netns("h1"), 2: netns("h2")}
    netns.underlay(hosts[1], hosts[2], "192.168.77.1", "192.168.77.2")
    guests = {}
    for h, ns in hosts.items():
        driver = simulated_host(ns, f"h{h}", f"192.168.77.{h}")
        driver.set_routed(routed_spec(h))
        driver.set_remote_hosts([HostSpec(f"h{3 - h}", f"192.168.77.{3 - h}", str(LAYOUT.host_block(3 - h)))])
        driver.setup_network(network)
        if h == 1:
            driver.serve_metadata(sqlite_db)
        guests[h] = netns(f"g{h}")
        driver.plug(EndpointSpec(f"ep-{h}", network.id, f"02:00:00:0{h}:01:12", address=addresses[h], kind="veth",
                                 netns=guests[h]))
    console, scripts = image_scripts(tmp_path)
    for h, ns in guests.items():
        take_dhcp(ns, scripts["udhcpc"])
        assert f"inet {addresses[h]}/32 " in in_ns(ns, "ip", "-4", "-o", "addr", "show", "eth0").stdout
    assert f"fabric-guest: eth0 {addresses[1]}/32 at" in console.read_text()
    routes = set(in_ns(guests[1], "ip", "route", "show").stdout.split("\n"))
    assert {f"default via {gateways[1]} dev eth0", f"{gateways[1]} dev eth0 scope link",
            f"{METADATA_ADDRESS} via {gateways[1]} dev eth0"} <= {r.strip() for r in routes}

    assert ping_eventually(guests[1], gateways[1])
    assert ping_eventually(guests[1], addresses[2])  # through both hosts' gateways and the underlay
    status, body = fetch(guests[1], "/openstack/latest/meta_data.json")
    assert status == 200 and json.loads(body)["uuid"] == mine


def test_the_guest_images_scripts_take_dhcp_then_run_user_data_from_the_service(netns, simulated_host, sqlite_db,
                                                                                  tmp_path):
    """The guest image's own udhcpc and metadata scripts, run in a guest namespace (no QEMU needed);
    ``unshare -u`` gives the script a hostname of its own to set.
    """
    user_data = b"#!/bin/sh\necho \"hello from $(hostname)\"\nexit 3\n"
    add_network(sqlite_db, "net-d", segmentation_id=303)
    mine = add_guest(sqlite_db, "net-d", "10.30.0.21", "02:00:00:00:0d:15", name="Script VM", user_data=user_data)
    host = netns("h1")
    driver = simulated_host(host, "h1", "192.168.77.1")
    driver.serve_metadata(sqlite_db)
    driver.setup_network(NetworkSpec(id="net-d", network_type="vxlan", segmentation_id=303,
                                     host_address="10.30.0.2/24", dhcp=True))
    ns = netns("gd")
    driver.plug(EndpointSpec("ep-d", "net-d", "02:00:00:00:0d:15", address="10.30.0.21", kind="veth", netns=ns))

    console, scripts = image_scripts(tmp_path)
    take_dhcp(ns, scripts["udhcpc"])
    assert f"{METADATA_ADDRESS} via 10.30.0.2" in in_ns(ns, "ip", "route", "show").stdout

    done = tpool.execute(_run, ["ip", "netns", "exec", ns, "unshare", "-u", "busybox", "sh", str(scripts["metadata"])])
    assert done.returncode == 0, done.stderr
    lines = console.read_text().splitlines()
    assert f"fabric-guest: metadata uuid={mine} hostname=script-vm" in lines
    begin = lines.index(guest_image.USER_DATA_BEGIN)
    assert lines[begin + 1:] == ["hello from script-vm", f"{guest_image.USER_DATA_END} 3"]


def test_the_monkey_patched_worker_serves_from_postgresql_after_reconciling(netns, postgres_db, tmp_path):
    """The production path: database rows -> reconcile -> driver -> listener, in a green worker."""
    guest = netns("gp")
    add_network(postgres_db, "net-p", segmentation_id=304)
    mine = add_guest(postgres_db, "net-p", "10.30.0.31", "02:00:00:00:0e:1f", name="pg-vm",
                     binding={"kind": "veth", "netns": guest, "ifname": "eth0"})
    host = netns("h1")
    worker = subprocess.Popen(
        [sys.executable, "-W", "ignore", "-m", "tests.functional.metadata.green_worker", host,
         postgres_db.engine.url.render_as_string(hide_password=False), str(tmp_path)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ready = worker.stdout.readline()
        assert ready.startswith("ready"), ready
        assert list(json.loads(ready.split(" ", 1)[1]).values()) == [["net-p"]]
        netns.configure_endpoint(guest, "10.30.0.31/24")
        in_ns(guest, "ip", "route", "add", f"{METADATA_ADDRESS}/32", "dev", "eth0")  # on-link: ARP for it
        status, body = fetch(guest, "/openstack/latest/meta_data.json")
        assert status == 200 and json.loads(body)["uuid"] == mine
    finally:
        worker.stdin.close()
        assert worker.wait(timeout=30) == 0
