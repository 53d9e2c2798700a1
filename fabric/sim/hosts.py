"""Stand up N simulated hypervisor hosts, take them down, and clean up after a crashed run.

A cloud named ``sim`` (the default) under the network prefix ``fab`` is:

- ``fab-sim-ul``: the underlay namespace, holding the bridge ``fab-ul`` and one
  veth end per host (``h1`` ...). It has no address; nor does the root namespace.
- ``fab-sim-h<N>``: host ``sim-h<N>``'s namespace: loopback, the veth end
  ``fab-ul`` with the host's underlay address (its VXLAN tunnel address), and
  everything the host's workers make (bridges, VXLAN, taps, dnsmasq, nftables,
  QEMU). Its ``fabric-compute`` (libvirt ``qemu:///embed``, rooted in the host's
  state directory) and ``fabric-network`` (linux driver) run inside it.
- a forwarder per host (:mod:`fabric.sim.forwarder`), in the root namespace,
  listening inside the host's namespace on the broker's loopback port (and the
  API's, and the database's unless PostgreSQL's unix socket serves it).

Every process the cloud starts is recorded (pid and start time) in its state
directory ``/run/fabric-sim/<prefix>-<cloud>/``, which its owner holds an
exclusive lock on while the cloud is up. A state directory whose lock is free
belongs to a run that died: :func:`cleanup_leftovers` stops its recorded
processes, every process inside its namespaces, deletes its namespaces (found
by the prefix's name pattern, never anything else) and the directory.
"""

from __future__ import annotations

import dataclasses
import fcntl
import ipaddress
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from fabric import config
from fabric.exception import NotFound
from fabric.sim import netns
from fabric.sim.netns import SimulationError

LOG = logging.getLogger(__name__)

STATE_ROOT = Path("/run/fabric-sim")
DEFAULT_UNDERLAY = "198.18.0.0/24"  # RFC 2544 benchmarking space: no tenant subnet should use it
UNDERLAY_BRIDGE = UNDERLAY_IFNAME = "fab-ul"
POSTGRES_SOCKET_DIR = "/var/run/postgresql"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
REPO = Path(__file__).resolve().parents[2]
#: Seconds a worker may take from exec to consuming (imports, libvirt, database, broker).
START_TIMEOUT = 120.0


@dataclasses.dataclass(frozen=True)
class SimHost:
    """One simulated host: its fabric host name, namespace and underlay address."""

    index: int
    name: str
    namespace: str
    address: str
    prefixlen: int
    state_dir: Path

    @property
    def libvirt_uri(self) -> str:
        # QEMU's monitor socket path must fit in 108 bytes: the root stays short.
        return f"qemu:///embed?root={self.state_dir / 'vm'}"


def state_dir_of(prefix: str, cloud: str, root: Path = STATE_ROOT) -> Path:
    return root / f"{prefix}-{cloud}"


def plan_hosts(cloud: str, count: int, prefix: str, underlay: str = DEFAULT_UNDERLAY,
               root: Path = STATE_ROOT) -> list[SimHost]:
    """The hosts of cloud ``cloud``; SimulationError for a bad name, count or underlay."""
    if not netns.CLOUD_NAME.fullmatch(cloud):
        raise SimulationError(reason=f"cloud name {cloud!r}: accepted 1-8 lowercase letters or digits, "
                                     "starting with a letter")
    network = ipaddress.ip_network(underlay)
    if not 1 <= count <= min(999, network.num_addresses - 2):
        raise SimulationError(reason=f"host count {count}: accepted 1 to {min(999, network.num_addresses - 2)} "
                                     f"on underlay {underlay}")
    base = state_dir_of(prefix, cloud, root)
    return [SimHost(i, f"{cloud}-h{i}", f"{prefix}-{cloud}-h{i}", str(network[i]), network.prefixlen,
                    base / f"h{i}") for i in range(1, count + 1)]


# --- control traffic over loopback ------------------------------------------------------------


def _loopback_port(url: str, what: str, default_port: int) -> int:
    parsed = urllib.parse.urlsplit(url)
    if (parsed.hostname or "localhost") not in LOOPBACK_NAMES:
        raise SimulationError(reason=f"{what} {parsed.scheme}://{parsed.hostname}: simulated hosts reach "
                                     "control services over loopback only; accepted: 127.0.0.1 or localhost")
    return parsed.port or default_port


def control_paths(settings: config.Settings) -> tuple[list[int], str]:
    """(loopback ports to forward into each host, the database URL host processes use).

    PostgreSQL on loopback is reached over its unix socket when the socket is
    there; SQLite needs nothing (the file system is shared); anything else on
    loopback is forwarded. Raises SimulationError for a memory:// transport or a
    service that is not on loopback.
    """
    ports: set[int] = set()
    if settings.rpc.transport_url.startswith("memory://"):
        raise SimulationError(reason="rpc transport_url memory:// reaches only one process; simulated hosts "
                                     "need a broker: accepted amqp://user:pass@127.0.0.1:5672/vhost")
    for url in settings.rpc.transport_url.split(";"):
        ports.add(_loopback_port(url.strip(), "rpc transport_url", 5672))
    if settings.api.listen in LOOPBACK_NAMES:
        ports.add(settings.api.port)  # for whatever a host asks the API (metadata)
    objectstore = urllib.parse.urlsplit(settings.objectstore_url)
    if objectstore.hostname in LOOPBACK_NAMES:
        ports.add(objectstore.port or 80)  # compute hosts download images from it
    url = sa.make_url(settings.database_url)
    database_url = settings.database_url
    if url.get_backend_name() != "sqlite":
        default = 5432 if url.get_backend_name() == "postgresql" else 3306
        port = _loopback_port(f"db://{url.host or 'localhost'}:{url.port or default}", "database url", default)
        socket_path = Path(POSTGRES_SOCKET_DIR) / f".s.PGSQL.{port}"
        if url.get_backend_name() == "postgresql" and socket_path.exists():
            database_url = sa.URL.create(
                url.drivername, url.username, url.password, database=url.database,
                query={**url.query, "host": POSTGRES_SOCKET_DIR, "port": str(port)},
            ).render_as_string(hide_password=False)
        else:
            ports.add(port)
    return sorted(ports), database_url


# --- the state directory -------------------------------------------------------------------


class StateDir:
    """A cloud's state directory: its lock, and the record of what it made (``state.json``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_fd: int | None = None

    @property
    def record_path(self) -> Path:
        return self.path / "state.json"

    def acquire(self) -> None:
        """Create the directory and take its lock; SimulationError when a live run holds it."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            owner = self.read().get("owner", {}).get("pid", "?")
            raise SimulationError(reason=f"simulated cloud {self.path.name} is up (process {owner}); "
                                         "take it down first (tools/hosts down)") from None
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def is_held(self) -> bool:
        """True when a live process holds this directory's lock (this one included)."""
        if self._lock_fd is not None:
            return True
        try:
            fd = os.open(self.path / "lock", os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def read(self) -> dict[str, Any]:
        try:
            return json.loads(self.record_path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def write(self, record: dict[str, Any]) -> None:
        partial = self.record_path.with_suffix(".partial")
        partial.write_text(json.dumps(record, indent=1))
        partial.replace(self.record_path)


# --- the cloud -----------------------------------------------------------------------------------


class SimulatedHosts:
    """N simulated hosts of one cloud, over the broker and database ``config_file`` names.

    :meth:`up` builds everything (cleaning up dead runs' leftovers first) or, on
    failure, removes what it made and raises; :meth:`down` removes everything.
    """

    def __init__(self, config_file: str | os.PathLike, count: int, *, cloud: str = "sim",
                 underlay: str = DEFAULT_UNDERLAY, log_dir: str | os.PathLike | None = None,
                 environ: Mapping[str, str] | None = None, state_root: Path = STATE_ROOT,
                 python: str = sys.executable, volume_hosts: int = 0) -> None:
        """``volume_hosts``: the first that many hosts also run ``fabric-volume`` (their volumes
        served over NBD on their underlay address)."""
        self.config_file = str(config_file)
        self.environ = dict(os.environ if environ is None else environ)
        self.settings = config.load(self.config_file, self.environ)
        self.prefix = self.settings.network.prefix
        self.cloud = cloud
        self.state_root = state_root
        self.hosts = plan_hosts(cloud, count, self.prefix, underlay, state_root)
        self.underlay = underlay
        self.underlay_namespace = f"{self.prefix}-{cloud}-ul"
        self.state = StateDir(state_dir_of(self.prefix, cloud, state_root))
        self.log_dir = Path(log_dir) if log_dir else Path(self.settings.default.data_dir) / "sim" / cloud / "logs"
        self.python = python
        self.processes: dict[str, subprocess.Popen] = {}
        self.namespaces: list[str] = []
        self.forward_ports, self.host_database_url = control_paths(self.settings)
        self.volume_hosts = self.hosts[:volume_hosts]

    # --- record ---

    def _record(self) -> None:
        self.state.write({
            "cloud": self.cloud, "prefix": self.prefix,
            "owner": {"pid": os.getpid(), "start": netns.start_time(os.getpid())},
            "namespaces": self.namespaces,
            "hosts": [{"name": h.name, "namespace": h.namespace, "address": h.address} for h in self.hosts],
            "processes": {name: {"pid": p.pid, "start": netns.start_time(p.pid)}
                          for name, p in self.processes.items()},
            "log_dir": str(self.log_dir),
        })

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def log(self, name: str) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace") if path.exists() else ""

    # --- up ---

    def up(self, control: tuple[str, ...] = ()) -> None:
        """Stand the hosts up and return once every worker consumes; SimulationError on failure
        (with nothing left behind). ``control`` names launchers (``fabric-api`` ...) to run as
        processes in the root namespace too, stopped with the hosts."""
        preflight()
        cleanup_leftovers(self.prefix, self.state_root)
        self.state.acquire()
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._record()
            self._make_underlay()
            self._register_topology()
            for binary in control:
                self._spawn(f"control-{binary}", [self.python, str(REPO / "bin" / binary),
                                                  "--config-file", self.config_file])
            for host in self.hosts:
                self._start_forwarder(host)
            for binary in ("fabric-network", "fabric-compute"):
                for host in self.hosts:
                    self._start_worker(host, binary)
            for host in self.volume_hosts:
                self._start_worker(host, "fabric-volume")
            for binary in ("fabric-network", "fabric-compute"):
                for host in self.hosts:
                    self._wait_started(host, binary)
            for host in self.volume_hosts:
                self._wait_started(host, "fabric-volume")
            for binary in control:
                name = f"control-{binary}"
                self._wait_for(name, self.processes[name], f"Started {binary} on host {self.settings.default.host}",
                               START_TIMEOUT)
        except BaseException:
            self.down()
            raise

    def _add_namespace(self, name: str) -> None:
        self.namespaces.append(name)
        self._record()
        netns.add_namespace(name)

    def _make_underlay(self) -> None:
        ul = self.underlay_namespace
        self._add_namespace(ul)
        netns.sh("ip", "-n", ul, "link", "add", UNDERLAY_BRIDGE, "type", "bridge")
        netns.sh("ip", "-n", ul, "link", "set", UNDERLAY_BRIDGE, "up")
        for host in self.hosts:
            self._add_namespace(host.namespace)
            port = f"h{host.index}"
            # Made in the underlay namespace, its peer straight in the host's: nothing in the root one.
            netns.sh("ip", "-n", ul, "link", "add", port, "type", "veth", "peer", "name", UNDERLAY_IFNAME,
                     "netns", host.namespace)
            netns.sh("ip", "-n", ul, "link", "set", port, "master", UNDERLAY_BRIDGE, "up")
            netns.sh("ip", "-n", host.namespace, "addr", "add", f"{host.address}/{host.prefixlen}",
                     "dev", UNDERLAY_IFNAME)
            netns.sh("ip", "-n", host.namespace, "link", "set", UNDERLAY_IFNAME, "up")
            host.state_dir.mkdir(parents=True, exist_ok=True)

    def _register_topology(self) -> None:
        """Number each host in the topology with its tunnel address, so every network worker
        finds the others (VXLAN flood lists, routed blocks) when it starts, and tell the
        network workers already running (hosts joining a live cloud), as IPAM does."""
        from fabric import rpc
        from fabric.cmd.launcher import open_database
        from fabric.context import RequestContext
        from fabric.exception import MessagingError
        from fabric.ipam.topology import DEFAULT_DATACENTER, Topology
        from fabric.network.model import HostSpec
        from fabric.network.rpcapi import NetworkAPI
        from fabric.rpc import signing

        db = open_database(self.settings, sync_if_empty=False)
        try:
            topology = Topology(db)
            try:
                topology.datacenter(DEFAULT_DATACENTER)
            except NotFound:  # an unconfigured cloud gets a layout, so hosts can be numbered
                topology.configure_datacenter(DEFAULT_DATACENTER, "10.0.0.0/8", 8, 4, 4, 8)
            rows = [topology.add_host(host.name, DEFAULT_DATACENTER, tunnel_address=host.address)
                    for host in self.hosts]
        finally:
            db.dispose()
        for host, row in zip(self.hosts, rows, strict=True):
            if row["tunnel_address"] != host.address:
                raise SimulationError(reason=f"host {host.name} is in the topology with tunnel address "
                                             f"{row['tunnel_address']}, not {host.address}; remove it first")
        transport = rpc.get_transport(self.settings.rpc)
        try:
            network = NetworkAPI(transport)
            with signing.acting_as("ipam"):  # it announces hosts as IPAM would (host_joined is IPAM's)
                for row in rows:
                    network.host_joined(RequestContext.admin(), HostSpec(row["name"], row["tunnel_address"],
                                                                         row["block"]).to_dict())
        except MessagingError as exc:  # Unroutable: no network worker runs yet, nobody to tell
            LOG.info("no running network worker was told about the new hosts: %s", exc.message)
        finally:
            transport.cleanup()

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(self.log_path(name), "ab") as out:
            popen = subprocess.Popen(argv, cwd=REPO, env=env or self.environ, stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=netns.die_with_parent)
        self.processes[name] = popen
        self._record()
        return popen

    def _start_forwarder(self, host: SimHost) -> None:
        name = f"{host.name}-forwarder"
        popen = self._spawn(name, [self.python, "-m", "fabric.sim.forwarder", host.namespace,
                                   *map(str, self.forward_ports)])
        self._wait_for(name, popen, "ready", 30)

    def worker_environment(self, host: SimHost) -> dict[str, str]:
        """The environment of ``host``'s workers: the config file's settings, with what makes
        them this host's (name, data directory, drivers, libvirt URI, tunnel address)."""
        return self.environ | {
            "PYTHONPATH": str(REPO),
            "FABRIC_DEFAULT_HOST": host.name,
            "FABRIC_DEFAULT_DATA_DIR": str(host.state_dir / "data"),
            # The cloud's RPC signing keys, not the per-host data directory's default.
            "FABRIC_SIGNING_KEY_DIR": self.settings.signing_key_dir,
            "FABRIC_DATABASE_URL": self.host_database_url,
            "FABRIC_COMPUTE_DRIVER": "libvirt",
            "FABRIC_COMPUTE_LIBVIRT_URI": host.libvirt_uri,
            "FABRIC_NETWORK_DRIVER": "linux",
            "FABRIC_NETWORK_NAMESPACE": "",  # the worker's own: the host's namespace
            "FABRIC_NETWORK_TUNNEL_ADDRESS": host.address,
            "FABRIC_SERVICE_ADVERTISE_ADDRESS": host.address,
        }

    def _start_worker(self, host: SimHost, binary: str) -> None:
        argv = ["ip", "netns", "exec", host.namespace, self.python, str(REPO / "bin" / binary),
                "--config-file", self.config_file]
        self._spawn(f"{host.name}-{binary}", argv, self.worker_environment(host))

    def _wait_started(self, host: SimHost, binary: str) -> None:
        name = f"{host.name}-{binary}"
        self._wait_for(name, self.processes[name], f"Started {binary} on host {host.name}", START_TIMEOUT)

    def _wait_for(self, name: str, popen: subprocess.Popen, text: str, timeout: float, since: int = 0) -> None:
        """Wait until ``text`` is in ``name``'s log after character ``since``; SimulationError
        (with the log's tail) when the process exits first or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while text not in self.log(name)[since:]:
            if popen.poll() is not None:
                raise SimulationError(reason=f"{name} exited ({popen.returncode}) before it was ready:\n"
                                             f"{self.log(name)[-3000:]}")
            if time.monotonic() > deadline:
                raise SimulationError(reason=f"{name} not ready within {timeout:g}s:\n{self.log(name)[-3000:]}")
            time.sleep(0.1)

    # --- one worker of one host ---

    def host(self, name: str) -> SimHost:
        """The host called ``name``; SimulationError naming the hosts there are."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise SimulationError(reason=f"no simulated host {name!r}; accepted: {', '.join(h.name for h in self.hosts)}")

    def worker(self, host: str, binary: str) -> subprocess.Popen:
        """The process of ``binary`` (``fabric-compute``, ``fabric-network``, ``fabric-volume`` on a
        volume host) on host ``host``."""
        name = f"{self.host(host).name}-{binary}"
        if name not in self.processes:
            raise SimulationError(reason=f"host {host} runs no {binary}; accepted: fabric-compute, fabric-network"
                                         + (", fabric-volume" if self.host(host) in self.volume_hosts else ""))
        return self.processes[name]

    def kill_worker(self, host: str, binary: str, signum: int = signal.SIGKILL) -> int:
        """Send ``signum`` to ``binary`` on ``host`` and reap it; its exit status. What the worker
        started (QEMU guests, dnsmasq) keeps running, as after a crash."""
        popen = self.worker(host, binary)
        if popen.poll() is None:
            popen.send_signal(signum)
        return popen.wait(30)

    def restart_worker(self, host: str, binary: str) -> subprocess.Popen:
        """Start ``binary`` on ``host`` again (stopping it first if it still runs) and return its
        process once it consumes; SimulationError when it exits or does not start in time."""
        target = self.host(host)
        stop_popens([self.worker(host, binary)])
        name = f"{target.name}-{binary}"
        since = len(self.log(name))
        self._start_worker(target, binary)
        self._wait_for(name, self.processes[name], f"Started {binary} on host {target.name}", START_TIMEOUT, since)
        return self.processes[name]

    # --- down ---

    def down(self) -> None:
        """Stop every process and delete every namespace this cloud made, then its state
        directory (logs stay in ``log_dir``). Safe to call more than once."""
        workers = [(n, p) for n, p in self.processes.items() if n.startswith(tuple(h.name + "-" for h in self.hosts))]
        # Compute first (no new plugs), then volume and network; then what they left (QEMU, qemu-nbd,
        # dnsmasq).
        for kind in ("fabric-compute", "fabric-volume", "fabric-network"):
            stop_popens([p for n, p in workers if n.endswith(kind)])
        for host in self.hosts:
            netns.stop_namespace_processes(host.namespace)
        stop_popens([p for n, p in self.processes.items() if n.endswith("-forwarder")])
        stop_popens([p for n, p in self.processes.items() if n.startswith("control-")])
        for name in reversed(self.namespaces):
            netns.delete_namespace(name)
        self.namespaces.clear()
        if self.state.path.exists():
            shutil.rmtree(self.state.path, ignore_errors=True)
        self.state.release()

    def describe(self) -> str:
        """What is up, for a person: hosts, namespaces, addresses, logs."""
        lines = [f"simulated cloud {self.cloud!r}: underlay {self.underlay} in namespace {self.underlay_namespace}"]
        for host in self.hosts:
            lines.append(f"  host {host.name}: namespace {host.namespace}, underlay/tunnel address {host.address}"
                         f" (a shell: ip netns exec {host.namespace} bash)")
        lines.append(f"  logs: {self.log_dir}")
        return "\n".join(lines)


def stop_popens(popens: list[subprocess.Popen], grace: float = 20.0) -> None:
    """SIGTERM our own children, SIGKILL those still running after ``grace``; reap them all."""
    for popen in popens:
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for popen in popens:
        try:
            popen.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(10)


def preflight() -> None:
    """SimulationError naming what this machine lacks for simulated hosts."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (namespaces, bridges and QEMU taps need it)")
    for binary in ("ip", "qemu-system-x86_64", "dnsmasq", "nft"):
        if shutil.which(binary) is None:
            missing.append(f"the {binary} binary")
    if subprocess.run(["getent", "passwd", "libvirt-qemu"], capture_output=True).returncode != 0:
        missing.append("a libvirt-qemu user (useradd --system libvirt-qemu): libvirt's QEMU driver looks it up")
    if missing:
        raise SimulationError(reason="simulated hosts need " + "; ".join(missing))


# --- leftovers ------------------------------------------------------------------------------------


def cleanup_leftovers(prefix: str, root: Path = STATE_ROOT, cloud: str | None = None) -> list[str]:
    """Remove what dead runs left (every cloud under ``prefix``, or only ``cloud``); what was removed.

    A run is dead when its state directory's lock is free. Its recorded processes
    (still the same processes) are stopped, then every process inside its
    namespaces, then the namespaces and the directory. Namespaces that match the
    prefix's pattern but whose cloud is up are left alone.
    """
    removed: list[str] = []
    pattern = netns.namespace_pattern(prefix)
    live: set[str] = set()
    for path in sorted(root.glob(f"{prefix}-*")) if root.is_dir() else []:
        name = path.name[len(prefix) + 1:]
        if cloud is not None and name != cloud:
            continue
        state = StateDir(path)
        if state.is_held():
            live.add(name)
            continue
        record = state.read()
        processes = [(p["pid"], p["start"]) for p in record.get("processes", {}).values() if p.get("start")]
        owner = record.get("owner", {})
        if owner.get("pid") and netns.is_same_process(owner["pid"], owner.get("start")):
            # Alive without its lock: a process that lost it cannot own anything; leave it be.
            processes = [p for p in processes if p[0] != owner["pid"]]
        netns.stop_processes(processes)
        removed += [f"process {pid}" for pid, _ in processes]
        shutil.rmtree(path, ignore_errors=True)
        removed.append(f"state {path}")
    for ns in netns.list_namespaces():
        match = pattern.fullmatch(ns)
        if match is None or match["cloud"] in live or (cloud is not None and match["cloud"] != cloud):
            continue
        netns.stop_namespace_processes(ns)
        netns.delete_namespace(ns)
        removed.append(f"namespace {ns}")
    return removed


def take_down(prefix: str, cloud: str, root: Path = STATE_ROOT, timeout: float = 120.0) -> list[str]:
    """``tools/hosts down``: ask a live run of ``cloud`` to stop (SIGTERM to its owner, which
    removes everything), wait for it, then remove whatever is left. What was removed."""
    state = StateDir(state_dir_of(prefix, cloud, root))
    owner = state.read().get("owner", {})
    if state.is_held() and owner.get("pid") and netns.is_same_process(owner["pid"], owner.get("start")):
        os.kill(owner["pid"], signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while state.is_held() and time.monotonic() < deadline:
            time.sleep(0.2)
        if state.is_held():
            raise SimulationError(reason=f"process {owner['pid']} still holds cloud {cloud} after {timeout:g}s")
    return cleanup_leftovers(prefix, root, cloud)
