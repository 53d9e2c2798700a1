"""A simulated compute host for functional tests: run it inside a test network namespace.

``ip netns exec NS python -m tests.functional.compute.compute_host WORKDIR BRIDGE GATEWAY_CIDR IMAGE [URI]``

In one eventlet process: an IPAM worker (the real IpamManager behind an
RPCServer on the ``memory://`` transport), and a ComputeManager on the libvirt
driver (``qemu:///embed`` under WORKDIR unless URI is given, so QEMU and
its taps live in this namespace) that gets its addresses from that IPAM through the real
``IpamAddresses`` RPC client. Plugging a NIC does what the network worker
does on an L2 network: a DHCP entry (the network worker's ``DhcpServers``
dnsmasq on BRIDGE) and the guest's NIC on BRIDGE.

Reads one JSON request per line on stdin, ``{"method": ..., "args": {...}}``,
calls the compute manager's method of that name (``driver.<name>`` calls the
driver; ``instance`` reads the row; ``create_instance`` inserts one) and
answers one JSON line. End of input: everything is torn down.
"""

import fabric.cmd.eventlet_entry  # noqa: F401, I001 - green before anything else

import dataclasses  # noqa: E402
import enum  # noqa: E402
import ipaddress  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

from eventlet import tpool  # noqa: E402

from fabric import rpc  # noqa: E402
from fabric.compute import states  # noqa: E402
from fabric.compute.collaborators import IpamAddresses  # noqa: E402
from fabric.compute.faults import latest_fault  # noqa: E402
from fabric.compute.manager import ComputeManager  # noqa: E402
from fabric.config import Settings  # noqa: E402
from fabric.context import RequestContext  # noqa: E402
from fabric.db import Database  # noqa: E402
from fabric.db.models import Base, Instance, Network, Subnet  # noqa: E402
from fabric.exception import FabricError  # noqa: E402
from fabric.ipam.manager import IpamManager  # noqa: E402
from fabric.network.dhcp import DhcpServers  # noqa: E402
from fabric.network.kernel import Kernel  # noqa: E402
from fabric.virt.driver import BootImage  # noqa: E402

HOST = "guest-host"


class BridgeWithDhcp:
    """Plug = a static DHCP entry for the NIC's MAC and address, and the NIC on the bridge."""

    def __init__(self, dhcp: DhcpServers, bridge: str, gateway_cidr: str) -> None:
        self.dhcp, self.bridge, self.gateway_cidr = dhcp, bridge, gateway_cidr
        self.entries: dict[str, tuple[str, str]] = {}

    def _apply(self) -> None:
        self.dhcp.ensure("net1", self.bridge, self.gateway_cidr, list(self.entries.values()))

    def plug(self, ctx, host, vif):
        self.entries[vif["id"]] = (vif["mac"], vif["address"])
        self._apply()
        return {"bridge": self.bridge}

    def unplug(self, ctx, host, vif):
        if self.entries.pop(vif["id"], None):
            self._apply()


class DirectKernel:
    def __init__(self, image: dict) -> None:
        self.image = image

    def boot_image(self, ctx, instance):
        return BootImage(kernel=self.image["kernel"], initrd=self.image["initrd"], cmdline=self.image["cmdline"])


class NoClaims:
    def release(self, instance_id, host):
        return True


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
    )
    db = Database(f"sqlite:///{work / 'fabric.sqlite'}")
    Base.metadata.create_all(db.engine)
    network = ipaddress.ip_interface(gateway_cidr)
    with db.begin() as session:
        session.add(Network(id="net1", project_id="p1", network_type="flat", physical_bridge=bridge))
        session.add(Subnet(id="subnet1", network_id="net1", project_id="p1", ip_version=4,
                           cidr=str(network.network), gateway_ip=str(network.ip)))
    transport = rpc.get_transport(settings.rpc)
    ipam_server = rpc.RPCServer(transport, topic="ipam", host=HOST, endpoint=IpamManager(settings, HOST, db))
    ipam_server.start()
    dhcp = DhcpServers(Kernel(None), str(work / "net"))
    # rescheduler=None: one host, so a failed build ends in error.
    manager = ComputeManager(settings, HOST, db, transport, addresses=IpamAddresses(transport, db),
                             network=BridgeWithDhcp(dhcp, bridge, gateway_cidr), rescheduler=None,
                             claims=NoClaims(), images=DirectKernel(image))
    manager.init_host()
    ctx = RequestContext.admin()
    print(json.dumps({"ok": True, "result": "ready", "virt_type": manager.driver.domain_type}), flush=True)
    try:
        while line := tpool.execute(sys.stdin.readline):
            request = json.loads(line)
            method, args = request["method"], request.get("args", {})
            try:
                if method == "create_instance":
                    instance_id = str(uuid.uuid4())
                    args.setdefault("requested_networks", [{"network_id": "net1"}])
                    with db.begin() as session:
                        session.add(Instance(id=instance_id, project_id="p1", user_id="u1", host=HOST,
                                             vm_state="building", task_state="scheduling", image_id="kernel",
                                             **args))
                    result = instance_id
                elif method == "instance":
                    result = states.get_instance(db, args["instance_id"], include_deleted=True)
                    result["fault"] = latest_fault(db, args["instance_id"])
                elif method.startswith("driver."):
                    result = getattr(manager.driver, method.split(".", 1)[1])(**args)
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
        dhcp.stop_all()
        ipam_server.stop()
        ipam_server.wait(5)
        transport.cleanup()


if __name__ == "__main__":
    main()
