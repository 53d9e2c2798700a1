"""A simulated compute host for functional tests: run it inside a test network namespace.

``ip netns exec NS python -m tests.functional.compute.compute_host WORKDIR BRIDGE GATEWAY_CIDR IMAGE [URI]``

One eventlet process runs the product's own workers for one host, on the
``memory://`` transport and a SQLite database under WORKDIR:

* an IPAM worker (the real IpamManager behind an RPCServer);
* a network worker (the real NetworkManager on the linux driver, in this
  namespace): BRIDGE, which the test made and gave GATEWAY_CIDR, is a flat
  network's provider bridge, so the worker puts each NIC's tap on it and serves
  the NIC's IPAM address from its own dnsmasq;
* a ComputeManager on the libvirt driver (``qemu:///embed`` under WORKDIR unless
  URI is given, so QEMU and its taps live in this namespace) with its default
  collaborators (:func:`fabric.compute.collaborators.default_collaborators`):
  addresses from IPAM and the network worker over RPC, the boot image from the
  image store, and the scheduler's claims on this host's compute_nodes row.
  Only rescheduling is off (one host: a failed build ends in error).

IMAGE (JSON: kernel, initrd, cmdline) is registered as the Image API stores it:
the kernel and initrd as ``aki``/``ari`` images whose bytes the Image API's own
writer uploads to an objectstore served by this process (its blobs under
WORKDIR/objects), and a boot image naming them by ``kernel_id``/``ramdisk_id``;
the compute manager downloads them over HTTP into its image cache.

Reads one JSON request per line on stdin, ``{"method": ..., "args": {...}}``,
calls the compute manager's method of that name (``driver.<name>`` calls the
driver; ``instance`` reads the row; ``node`` this host's compute_nodes row;
``network.<name>`` the network worker; ``create_instance`` adds an instance
and claims it on this host as the scheduler does) and answers one JSON line.
End of input: everything is torn down.
"""

import fabric.cmd.eventlet_entry  # noqa: F401, I001 - green before anything else

import dataclasses  # noqa: E402
import enum  # noqa: E402
import ipaddress  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import sqlalchemy as sa  # noqa: E402
from eventlet import tpool  # noqa: E402

from fabric import rpc  # noqa: E402
from fabric.api import image_store  # noqa: E402
from fabric.api.bootstrap import ensure_image_service  # noqa: E402
from fabric.compute import states  # noqa: E402
from fabric.compute.faults import latest_fault  # noqa: E402
from fabric.compute.manager import ComputeManager  # noqa: E402
from fabric.config import Settings  # noqa: E402
from fabric.context import RequestContext  # noqa: E402
from fabric.db import Database  # noqa: E402
from fabric.db.models import Base, ComputeNode, Image, Network, SecurityGroupRule, Subnet  # noqa: E402
from fabric.db.types import new_uuid  # noqa: E402
from fabric.exception import FabricError  # noqa: E402
from fabric.ipam.manager import IpamManager  # noqa: E402
from fabric.network.secgroups_db import ensure_default_group  # noqa: E402
from fabric.network.manager import NetworkManager  # noqa: E402
from fabric.objectstore.core import Objectstore  # noqa: E402
from fabric.objectstore.server import ObjectstoreServer  # noqa: E402
from fabric.rpc import signing  # noqa: E402
from fabric.scheduler import claims  # noqa: E402
from fabric.scheduler.host_state import HostState  # noqa: E402
from fabric.scheduler.request import RequestSpec  # noqa: E402
from tests.fixtures.instances import add_instance  # noqa: E402

HOST = "guest-host"
PROJECT = "p1"
NETWORK = "net1"


def register_boot_image(settings: Settings, db: Database, image: dict) -> str:
    """The guest's kernel and initrd as images of PROJECT (bytes written by the Image API's own
    store writer) and a boot image naming them; returns the boot image's id."""
    ids = {}
    for kind, disk_format in (("kernel", "aki"), ("initrd", "ari")):
        ids[kind] = new_uuid()
        with open(image[kind], "rb") as handle:
            stored = image_store.write(settings, db, ids[kind], handle.read, settings.api.max_image_size)
        with db.begin() as session:
            session.add(Image(id=ids[kind], name=f"guest-{kind}", owner=PROJECT, status="active",
                              disk_format=disk_format, container_format=disk_format, **stored))
    boot_id = new_uuid()
    with db.begin() as session:
        session.add(Image(id=boot_id, name="guest", owner=PROJECT, status="active", disk_format="ami",
                          container_format="ami", properties={"kernel_id": ids["kernel"], "ramdisk_id": ids["initrd"],
                                                              "os_command_line": image["cmdline"]}))
    return boot_id


def create_instance(db: Database, image_id: str, settings: Settings, **values) -> str:
    """An instance as the API writes it, then claimed on this host as the scheduler claims it
    (its host set, its vCPUs, memory and disk added to this host's compute_nodes row)."""
    values.setdefault("requested_networks", [{"network_id": NETWORK}])
    instance_id = add_instance(db, project_id=PROJECT, image_id=image_id, **values)
    with db.begin() as session:
        node_id = session.scalar(sa.select(ComputeNode.id).where(ComputeNode.host == HOST))
    scheduler = settings.scheduler
    claims.claim(db, RequestSpec(vcpus=values["vcpus"], memory_mb=values["memory_mb"], disk_gb=values["disk_gb"],
                                 instance_id=instance_id, project_id=PROJECT),
                 HostState(host=HOST, node_id=node_id),
                 claims.Ratios(scheduler.ram_allocation_ratio, scheduler.cpu_allocation_ratio,
                               scheduler.disk_allocation_ratio))
    return instance_id


def compute_node(db: Database) -> dict:
    with db.begin() as session:
        node = session.scalars(sa.select(ComputeNode).where(ComputeNode.host == HOST)).one()
        return {"vcpus_used": node.vcpus_used, "memory_mb_used": node.memory_mb_used,
                "disk_gb_used": node.disk_gb_used, "running_vms": node.running_vms}


def _plain(value):
    if dataclasses.is_dataclass(value):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def main() -> None:
    work, bridge, gateway_cidr, image = Path(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    uri = sys.argv[5] if len(sys.argv) > 5 else f"qemu:///embed?root={work / 'embed'}"
    settings = Settings().replace(
        default={"host": HOST, "data_dir": str(work)},
        rpc={"transport_url": "memory://", "call_timeout": 30},
        compute={"driver": "libvirt", "libvirt_uri": uri,
                 "instances_path": str(work / "instances"), "virt_type": "auto",
                 "guest_shutdown_timeout": 20.0},
        network={"driver": "linux"},
        # The guest's metadata fetch is not what these tests are about.
        metadata={"enabled": False},
    )
    db = Database(f"sqlite:///{work / 'fabric.sqlite'}")
    Base.metadata.create_all(db.engine)
    network = ipaddress.ip_interface(gateway_cidr)
    with db.begin() as session:
        session.add(Network(id=NETWORK, project_id=PROJECT, network_type="flat", physical_bridge=bridge))
        session.add(Subnet(id="subnet1", network_id=NETWORK, project_id=PROJECT, ip_version=4,
                           cidr=str(network.network), gateway_ip=str(network.ip), enable_dhcp=True))
    # The test pings the guest from its host, outside the guest's default security group:
    # let ICMP in, as a user would with `security group rule create --protocol icmp default`.
    default_group = ensure_default_group(db, PROJECT)
    with db.begin() as session:
        session.add(SecurityGroupRule(security_group_id=default_group, project_id=PROJECT, direction="ingress",
                                      ethertype="IPv4", protocol="icmp"))
    settings = settings.replace(objectstore={"port": 0, "storage_dir": str(work / "objects")})
    objectstore = ObjectstoreServer(settings, Objectstore.from_settings(settings, db)).start()
    settings = settings.replace(objectstore={"port": objectstore.port})
    ensure_image_service(db)
    boot_image = register_boot_image(settings, db, image)
    # As fabric-all starts: the keys of the roles run here, made under WORKDIR on first start.
    signing.install(signing.from_settings(settings, ["compute", "network", "ipam"], generate_missing=True))
    transport = rpc.get_transport(settings.rpc)
    network_worker = NetworkManager(settings, HOST, db, transport)
    network_worker.init_host()
    servers = [rpc.RPCServer(transport, topic="ipam", host=HOST, endpoint=IpamManager(settings, HOST, db)),
               rpc.RPCServer(transport, topic="network", host=HOST, endpoint=network_worker)]
    for server in servers:
        server.start()
    # rescheduler=None: one host, so a failed build ends in error.
    manager = ComputeManager(settings, HOST, db, transport, rescheduler=None)
    manager.init_host()
    ctx = RequestContext.admin()
    # The network worker's dnsmasq files: <state_dir>/dhcp/<network id>/ (fabric.network.dhcp).
    dhcp_hosts = Path(network_worker.driver.state_dir) / "dhcp" / NETWORK / "hosts"
    print(json.dumps({"ok": True, "result": "ready", "virt_type": manager.driver.domain_type,
                      "dhcp_hosts": str(dhcp_hosts)}), flush=True)
    try:
        while line := tpool.execute(sys.stdin.readline):
            request = json.loads(line)
            method, args = request["method"], request.get("args", {})
            try:
                if method == "create_instance":
                    result = create_instance(db, boot_image, settings, **args)
                elif method == "instance":
                    result = states.get_instance(db, args["instance_id"], include_deleted=True)
                    result["fault"] = latest_fault(db, args["instance_id"])
                elif method == "node":
                    result = compute_node(db)
                elif method.startswith("driver."):
                    result = getattr(manager.driver, method.split(".", 1)[1])(**args)
                elif method.startswith("network."):
                    result = getattr(network_worker, method.split(".", 1)[1])(ctx, **args)
                else:
                    result = getattr(manager, method)(ctx, **args)
                reply = {"ok": True, "result": _plain(result)}
            except FabricError as exc:
                reply = {"ok": False, "error": exc.to_dict()}
            print(json.dumps(reply), flush=True)
    finally:
        for instance_id in manager.driver.list_instances():
            manager.driver.destroy(instance_id)
        manager.cleanup_host()
        for server in servers:
            server.stop()
            server.wait(5)
        network_worker.driver.remove_all()
        network_worker.cleanup_host()
        objectstore.stop()
        transport.cleanup()


if __name__ == "__main__":
    main()
