"""``tools/run`` where real guests can run: one real host on the embedded defaults.

``fabric-all`` (every worker in one process, ``memory://``, SQLite) runs inside
the namespace ``<prefix>-run-h1`` on the libvirt driver (``qemu:///embed``, so
QEMU and its taps live in that namespace) and the linux network driver: bridges,
VXLAN devices, taps, dnsmasq, nftables and the guests all live there and the
machine's own network is untouched. A forwarder (:mod:`fabric.sim.forwarder`,
``--into``) makes the API reachable at ``127.0.0.1:<port>`` in the root
namespace. Once the API answers, the cloud is made ready for a first server
through the public API only: a flavor, the project's small guest image (kernel,
ramdisk and a boot image naming them) uploaded through the Image API, a network
and a subnet, and ICMP let into the project's default security group (so the
printed ping from the host reaches the guest). Then it prints what to type.

Each run is a new cloud: its database, images and guests live in the run's
state directory and go when it stops (SIGINT, SIGTERM); what a run that died
left behind is removed by the next one (:func:`fabric.sim.hosts.cleanup_leftovers`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from fabric import config
from fabric.sim import hosts, netns
from fabric.sim.netns import SimulationError

LOG = logging.getLogger(__name__)

CLOUD = "run"
HOST = "run-h1"
#: What a newcomer's first server uses (printed): the names tools/run creates.
FLAVOR, IMAGE, NETWORK, SUBNET, CIDR = "m1.tiny", "fabric-guest", "net1", "sub1", "10.0.0.0/24"
#: The line after which the instructions are complete (tests wait for it).
READY_LINE = "Ctrl-C stops it"
#: Exit status of ``--check`` when real guests cannot run here (tools/run then runs the fake drivers).
CANNOT_RUN = 3
READY_TIMEOUT = 120.0


def why_real_guests_cannot_run() -> str | None:
    """One line naming what this machine lacks for a real guest in a namespace, or None."""
    try:
        hosts.preflight()
    except SimulationError as exc:
        return exc.message
    if not os.path.exists("/dev/net/tun"):
        return "there is no /dev/net/tun (guests' NICs are TAP devices)"
    try:
        import libvirt  # noqa: F401 - present only with the libvirt extra
    except ImportError:
        return "libvirt-python is not installed (the libvirt extra)"
    probe = f"{config.NetworkSection().prefix}-{CLOUD}-probe"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"network namespaces cannot be made here ({done.stderr.strip()})"
    netns.delete_namespace(probe)
    return None


class LocalCloud:
    """The one-host real cloud of ``tools/run``: :meth:`up`, :meth:`seed`, :meth:`down`."""

    def __init__(self, port: int, guest: dict[str, str], log_dir: Path, *, cloud: str = CLOUD,
                 state_root: Path = hosts.STATE_ROOT, python: str = sys.executable) -> None:
        if not netns.CLOUD_NAME.fullmatch(cloud):
            raise SimulationError(reason=f"cloud name {cloud!r}: accepted {netns.CLOUD_NAME.pattern}")
        self.cloud = cloud
        self.port = port
        self.guest = guest
        self.prefix = config.NetworkSection().prefix
        self.namespace = f"{self.prefix}-{cloud}-h1"
        self.state = hosts.StateDir(hosts.state_dir_of(self.prefix, cloud, state_root))
        self.log_dir = log_dir
        self.python = python
        self.password = secrets.token_urlsafe(12)
        self.processes: dict[str, subprocess.Popen] = {}
        self.namespaces: list[str] = []

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.state.path / "fabric.conf"

    def _record(self) -> None:
        self.state.write({"cloud": self.cloud, "prefix": self.prefix,
                          "owner": {"pid": os.getpid(), "start": netns.start_time(os.getpid())},
                          "namespaces": self.namespaces,
                          "processes": {name: {"pid": p.pid, "start": netns.start_time(p.pid)}
                                        for name, p in self.processes.items()}})

    def up(self) -> None:
        """Clean up after a dead run, then start fabric-all in its namespace and the API
        forwarder; returns once the API answers. SimulationError (nothing left behind) on failure."""
        hosts.cleanup_leftovers(self.prefix, self.state.path.parent, self.cloud)
        self.state.acquire()
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.namespaces.append(self.namespace)
            self._record()
            netns.add_namespace(self.namespace)
            self._write_config()
            self._spawn("forwarder", [self.python, "-m", "fabric.sim.forwarder", "--into", self.namespace,
                                      str(self.port)])
            self._spawn("fabric-all", ["ip", "netns", "exec", self.namespace, self.python,
                                       str(hosts.REPO / "bin" / "fabric-all"), "--config-file", str(self.config_file)])
            self._wait_for_api()
        except BaseException:
            self.down()
            raise

    def _write_config(self) -> None:
        data = self.state.path / "data"
        self.config_file.write_text(f"""# written by tools/run; this run's cloud lives in {self.state.path}
[DEFAULT]
host = {HOST}
data_dir = {data}
[api]
port = {self.port}
admin_password = {self.password}
[compute]
driver = libvirt
libvirt_uri = qemu:///embed?root={self.state.path / 'libvirt'}
[network]
driver = linux
# One host: VXLAN segments with no remote end, over the namespace's loopback.
tunnel_address = 127.0.0.1
""")
        self.config_file.chmod(0o600)

    def _spawn(self, name: str, argv: list[str]) -> None:
        with open(self.log_dir / f"{name}.log", "ab") as out:
            self.processes[name] = subprocess.Popen(
                argv, cwd=hosts.REPO, env=os.environ | {"PYTHONPATH": str(hosts.REPO)}, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=netns.die_with_parent)
        self._record()

    def _wait_for_api(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            for name, popen in self.processes.items():
                if popen.poll() is not None:
                    raise SimulationError(reason=f"{name} exited ({popen.returncode}); see {self.log_dir}/{name}.log")
            try:
                with urllib.request.urlopen(f"{self.api_url}/v3", timeout=5) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass  # not listening yet (the forwarder resets the connection)
            if time.monotonic() > deadline:
                raise SimulationError(reason=f"the API did not answer within {READY_TIMEOUT:g}s; "
                                             f"see {self.log_dir}/fabric-all.log")
            time.sleep(0.25)

    def seed(self) -> dict[str, str]:
        """A flavor, the guest image, a network and subnet, through the public API; their ids."""
        api = ApiClient(self.api_url, "admin", self.password, "admin")
        flavor = api.post("/compute/v2.1/flavors", {"flavor": {"name": FLAVOR, "ram": 128, "vcpus": 1, "disk": 1}})
        kernel = api.upload_image(f"{IMAGE}-kernel", "aki", Path(self.guest["kernel"]).read_bytes())
        ramdisk = api.upload_image(f"{IMAGE}-ramdisk", "ari", Path(self.guest["initrd"]).read_bytes())
        boot = api.upload_image(IMAGE, "ami", b"direct kernel boot", kernel_id=kernel, ramdisk_id=ramdisk,
                                os_command_line=self.guest["cmdline"])
        network = api.post("/networking/v2.0/networks", {"network": {"name": NETWORK}})["network"]["id"]
        api.post("/networking/v2.0/subnets", {"subnet": {"name": SUBNET, "network_id": network, "cidr": CIDR,
                                                         "ip_version": 4}})
        # The printed ping comes from the host, outside the servers' default security group.
        [default] = [g["id"] for g in api.get("/networking/v2.0/security-groups?name=default")["security_groups"]
                     if g["project_id"] == api.project_id]
        api.post("/networking/v2.0/security-group-rules", {"security_group_rule": {
            "security_group_id": default, "direction": "ingress", "ethertype": "IPv4", "protocol": "icmp"}})
        return {"flavor": flavor["flavor"]["id"], "image": boot, "network": network}

    def instructions(self) -> str:
        """What a newcomer types next."""
        venv_bin = Path(self.python).parent
        return f"""fabric is running: one real host (namespace {self.namespace}: its bridges, dnsmasq and QEMU guests),
every worker in one process. Logs: {self.log_dir}/fabric-all.log. In another shell:

    export PATH={venv_bin}:$PATH OS_AUTH_URL={self.api_url}/v3 OS_USERNAME=admin OS_PASSWORD={self.password} \\
           OS_PROJECT_NAME=admin OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default
    openstack server create --flavor {FLAVOR} --image {IMAGE} --network {NETWORK} --wait vm1
    ip netns exec {self.namespace} busybox ping -c 3 $(openstack server show vm1 -f value -c addresses | grep -oE '([0-9]+[.]){{3}}[0-9]+')

{READY_LINE}: every guest, bridge and the namespace go with it (each run is a new cloud)."""

    def down(self) -> None:
        """Stop fabric-all, then what runs in the namespace (QEMU, dnsmasq), the forwarder; delete
        the namespace and the run's state. Safe to call more than once."""
        hosts.stop_popens([p for n, p in self.processes.items() if n == "fabric-all"])
        for namespace in self.namespaces:
            netns.stop_namespace_processes(namespace)
        hosts.stop_popens(list(self.processes.values()))
        for namespace in reversed(self.namespaces):
            netns.delete_namespace(namespace)
        self.namespaces.clear()
        self.processes.clear()
        if self.state.path.exists():
            shutil.rmtree(self.state.path, ignore_errors=True)
        self.state.release()


class ApiClient:
    """Just enough of the public API (JSON over HTTP with a project-scoped token) to seed a cloud."""

    def __init__(self, base_url: str, user: str, password: str, project: str) -> None:
        self.base_url = base_url
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": "Default"}, "password": password}}},
            "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}}
        request = self._request("POST", "/v3/auth/tokens", json.dumps(body).encode(), "application/json")
        with self._open(request) as answer:
            self.token = answer.headers["X-Subject-Token"]
            self.project_id = json.loads(answer.read())["token"]["project"]["id"]

    def _request(self, method: str, path: str, data: bytes | None, content_type: str | None) -> urllib.request.Request:
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        if content_type:
            request.add_header("Content-Type", content_type)
        if getattr(self, "token", None):
            request.add_header("X-Auth-Token", self.token)
        return request

    @staticmethod
    def _open(request: urllib.request.Request) -> Any:
        try:
            return urllib.request.urlopen(request, timeout=60)
        except urllib.error.HTTPError as exc:
            raise SimulationError(reason=f"{request.get_method()} {request.full_url} answered {exc.code}: "
                                         f"{exc.read().decode(errors='replace')[:500]}") from None

    def get(self, path: str) -> dict:
        with self._open(self._request("GET", path, None, None)) as answer:
            return json.loads(answer.read())

    def post(self, path: str, body: dict, method: str = "POST") -> dict:
        with self._open(self._request(method, path, json.dumps(body).encode(), "application/json")) as answer:
            return json.loads(answer.read() or b"{}")

    def upload_image(self, name: str, disk_format: str, data: bytes, **properties: str) -> str:
        """A public image holding ``data``; its id."""
        image = self.post("/image/v2/images", {"name": name, "disk_format": disk_format,
                                               "container_format": disk_format, "visibility": "public",
                                               **properties})
        with self._open(self._request("PUT", f"/image/v2/images/{image['id']}/file", data,
                                      "application/octet-stream")):
            return image["id"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help=f"only say (exit {CANNOT_RUN}, one line) why real guests cannot run here")
    parser.add_argument("--port", type=int, default=config.ApiSection().port, help="the API's port")
    parser.add_argument("--guest-image", help="the JSON tools/build-guest-image prints")
    parser.add_argument("--log-dir", default=str(Path(config.DefaultSection().data_dir) / "run"))
    parser.add_argument("--cloud", default=CLOUD, help="names the namespace <prefix>-<cloud>-h1 and the state")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    reason = why_real_guests_cannot_run()
    if args.check or reason:
        if reason:
            print(reason)
        return CANNOT_RUN if reason else 0
    if not args.guest_image:
        parser.error("--guest-image is required")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        cloud = LocalCloud(args.port, json.loads(Path(args.guest_image).read_text()), Path(args.log_dir),
                           cloud=args.cloud)
        cloud.up()
        try:
            cloud.seed()
            print(cloud.instructions(), flush=True)
            stop.wait()
        finally:
            print("stopping: removing the guests, the namespace and this run's cloud", file=sys.stderr)
            cloud.down()
    except SimulationError as exc:
        print(f"tools/run: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
