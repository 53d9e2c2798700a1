#!/usr/bin/env python3
"""A throwaway RabbitMQ cluster on this machine: N nodes, their own ports, one cookie.

Standard library only (no fabric import), so the tests, the benchmarks and the
``tools/rabbitmq-cluster`` command share it.

Promises:

* every node has its own node name (``fabcl<id>n<i>@localhost``), AMQP port,
  Erlang distribution port, data, log and plugin directories under one temporary
  directory, and listens on 127.0.0.1 only; no management plugin is loaded;
* the nodes find each other through an ``epmd`` of their own (its own port, started
  and stopped here), so the machine's broker, its epmd and its node
  (``rabbit@<host>``, port 5672) are never asked anything, stopped, reset or joined;
* node 1 starts first; the others start once it runs and join it as they boot (classic
  peer discovery: their configuration names node 1), so no node restarts to join;
* a node is waited for by its AMQP port first (a socket, no cost), then confirmed by one
  ``rabbitmqctl await_startup``: every CLI run is an Erlang VM of its own (about a second of
  CPU), and asking one of a node still booting only slows the boot down;
* a vhost is created with guest's permissions in one ``rabbitmqctl import_definitions``
  (:func:`vhost_definitions`), not ``add_vhost`` then ``set_permissions``;
* the nodes' schedulers do not busy-wait (``RABBITMQ_SCHEDULER_BUSY_WAIT_THRESHOLD=none``,
  which the server script turns into ``+sbwt none +sbwtdcpu none +sbwtdio none``: RabbitMQ's
  advice for CPUs shared with other work, and already its default in 3.10, said here so that
  no other default applies);
* :meth:`RabbitCluster.stop` stops every node and the epmd it started, each by its own
  PID (SIGTERM, then SIGKILL after a grace period), and deletes the temporary
  directory, whatever state the start reached.

Measured on the shared 2-core development machine (RabbitMQ 3.10.8, other work
beside it): a 3-node cluster is up and joined in 12-14 s of wall time and 14 s of CPU
(joining by restarting the app took 14-15 s and 18-19 s), a stopped node is back in
~7-10 s; so tests share one cluster per session.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

RABBITMQ_BIN = os.environ.get("FABRIC_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin")
START_TIMEOUT = 180.0
STOP_TIMEOUT = 60.0
CREDENTIALS = "guest:guest"


def vhost_definitions(vhost: str, user: str) -> str:
    """A definitions document (JSON) creating ``vhost`` and giving ``user`` every
    permission on it: one ``rabbitmqctl import_definitions`` (reading it from stdin)
    does both, where ``add_vhost`` and ``set_permissions`` were two CLI runs of an
    Erlang VM each. The import returns once both are in place."""
    return json.dumps({
        "vhosts": [{"name": vhost}],
        "permissions": [{"user": user, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}],
    })


class ClusterError(Exception):
    """The cluster could not be started or a node could not be driven."""


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _accepts(port: int) -> bool:
    """Whether something accepts connections on loopback ``port``."""
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def choose_base_port(size: int, start: int = 21000, stop: int = 31000) -> int:
    """A base port whose block (see :class:`RabbitCluster`) is entirely free on loopback."""
    step = 400
    first = start + secrets.randbelow((stop - start) // step) * step
    candidates = list(range(first, stop, step)) + list(range(start, first, step))
    for base in candidates:
        if all(_port_free(port) for port in RabbitCluster.ports_of(base, size)):
            return base
    raise ClusterError(f"no free block of ports between {start} and {stop}")


class Node:
    """One node of the cluster: its name, ports, directory and process."""

    def __init__(self, cluster: RabbitCluster, index: int) -> None:
        self.index = index
        self.name = f"{cluster.prefix}n{index}@localhost"
        self.amqp_port = cluster.base_port + index
        self.dist_port = cluster.base_port + 100 + index
        self.dir = os.path.join(cluster.dir, f"n{index}")
        self.process: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def url(self, vhost: str = "") -> str:
        return f"amqp://{CREDENTIALS}@127.0.0.1:{self.amqp_port}/{vhost}"

    def __repr__(self) -> str:
        return f"<Node {self.name} amqp={self.amqp_port} pid={self.process.pid if self.process else None}>"


class RabbitCluster:
    """``size`` RabbitMQ nodes on loopback clustered together; see the module docstring.

    Ports, from ``base_port``: AMQP ``base+i`` and distribution ``base+100+i`` for node
    i (1-based), the private epmd at ``base+200``, and ``base+300..base+310`` for
    ``rabbitmqctl``'s own distribution listener.
    """

    def __init__(self, size: int = 3, base_port: int | None = None) -> None:
        if size < 1:
            raise ClusterError(f"size {size}: at least 1 node")
        self.size = size
        self.base_port = base_port if base_port is not None else choose_base_port(size)
        self.prefix = f"fabcl{secrets.token_hex(3)}"
        self.dir = tempfile.mkdtemp(prefix="fabric-rabbit-cluster-")
        self.epmd_port = self.base_port + 200
        self.nodes = [Node(self, i) for i in range(1, size + 1)]
        self._epmd: subprocess.Popen | None = None
        self.startup_seconds: float | None = None

    @staticmethod
    def ports_of(base: int, size: int) -> list[int]:
        return ([base + i for i in range(1, size + 1)] + [base + 100 + i for i in range(1, size + 1)]
                + [base + 200] + list(range(base + 300, base + 311)))

    # -- addresses -----------------------------------------------------------------
    def urls(self, vhost: str = "") -> list[str]:
        """One amqp URL per node, in node order."""
        return [node.url(vhost) for node in self.nodes]

    def transport_url(self, vhost: str = "") -> str:
        """Every node's URL in kombu's failover syntax (``;``-separated)."""
        return ";".join(self.urls(vhost))

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise ClusterError(f"{name!r} is not a node of this cluster ({', '.join(n.name for n in self.nodes)})")

    # -- environment ------------------------------------------------------------------
    def _env(self, node: Node | None = None) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("RABBITMQ_", "ERL_"))}
        env.update({
            "HOME": self.dir,  # holds the cluster's .erlang.cookie for nodes and CLI alike
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            # Never read the machine's /etc/rabbitmq/rabbitmq-env.conf (it names its node).
            "RABBITMQ_CONF_ENV_FILE": os.path.join(self.dir, "rabbitmq-env.conf"),
            "RABBITMQ_CTL_DIST_PORT_MIN": str(self.base_port + 300),
            "RABBITMQ_CTL_DIST_PORT_MAX": str(self.base_port + 310),
            "RABBITMQ_USE_LONGNAME": "false",
        })
        if node is not None:
            env.update({
                "RABBITMQ_NODENAME": node.name,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(node.amqp_port),
                "RABBITMQ_DIST_PORT": str(node.dist_port),
                "RABBITMQ_CONFIG_FILE": os.path.join(node.dir, "rabbitmq.conf"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": os.path.join(node.dir, "advanced.config"),
                "RABBITMQ_MNESIA_BASE": os.path.join(node.dir, "mnesia"),
                "RABBITMQ_LOG_BASE": os.path.join(node.dir, "log"),
                "RABBITMQ_PLUGINS_EXPAND_DIR": os.path.join(node.dir, "plugins-expand"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(self.dir, "enabled_plugins"),
                "RABBITMQ_PID_FILE": os.path.join(node.dir, "rabbit.pid"),
                # Run the VM in place of the script (its PID is the node's) without a shell.
                "RABBITMQ_ALLOW_INPUT": "true",
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS":
                    "-noinput -start_epmd false -kernel inet_dist_use_interface {127,0,0,1}",
                # Schedulers out of work sleep at once instead of spinning first: idle nodes
                # leave the CPUs they share to the tests.
                "RABBITMQ_SCHEDULER_BUSY_WAIT_THRESHOLD": "none",
            })
        return env

    def _write_files(self) -> None:
        cookie = os.path.join(self.dir, ".erlang.cookie")
        with open(cookie, "w") as f:
            f.write(secrets.token_hex(16).upper())
        os.chmod(cookie, 0o400)
        for name, text in (("rabbitmq-env.conf", ""), ("enabled_plugins", "[].\n")):
            with open(os.path.join(self.dir, name), "w") as f:
                f.write(text)
        for node in self.nodes:
            os.makedirs(os.path.join(node.dir, "log"), exist_ok=True)
            # The others name the first as their peer (it names none: with peers it cannot reach
            # yet it would retry for seconds before booting alone).
            joins = "" if node is self.nodes[0] else (
                "cluster_formation.peer_discovery_backend = classic_config\n"
                f"cluster_formation.classic_config.nodes.1 = {self.nodes[0].name}\n")
            with open(os.path.join(node.dir, "rabbitmq.conf"), "w") as f:
                f.write(f"listeners.tcp.1 = 127.0.0.1:{node.amqp_port}\n"
                        f"log.console = false\nlog.file.level = info\n{joins}")

    # -- commands ---------------------------------------------------------------------
    def ctl(self, node: Node | str, *args: str, timeout: float = 120, tool: str = "rabbitmqctl",
            stdin: str | None = None) -> str:
        """``rabbitmqctl -n NODE -q ARGS`` (or another CLI tool), given ``stdin`` if any: its
        output; ClusterError with its complaint when it fails."""
        name = node if isinstance(node, str) else node.name
        argv = [os.path.join(RABBITMQ_BIN, tool), "-n", name, "-q", *args]
        try:
            done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout,
                                  env=self._env(), check=False)
        except subprocess.TimeoutExpired:
            raise ClusterError(f"`{' '.join(argv)}` did not finish within {timeout}s") from None
        if done.returncode != 0:
            raise ClusterError(f"`{' '.join(argv)}` failed ({done.returncode}): "
                               f"{(done.stderr or done.stdout).strip()[:1000]}")
        return done.stdout

    def _start_process(self, node: Node) -> None:
        log = open(os.path.join(node.dir, "log", "console.log"), "ab")  # noqa: SIM115 - the child owns it
        try:
            node.process = subprocess.Popen(
                [os.path.join(RABBITMQ_BIN, "rabbitmq-server")], env=self._env(node), cwd=node.dir,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()

    def _await(self, node: Node, deadline: float) -> None:
        while not _accepts(node.amqp_port):
            if not node.running:
                raise ClusterError(f"{node.name} exited ({node.process.returncode}) while starting; "
                                   f"see {node.dir}/log")
            if time.monotonic() > deadline:
                raise ClusterError(f"{node.name} did not start within {START_TIMEOUT}s; see {node.dir}/log")
            time.sleep(0.2)
        while True:
            if not node.running:
                raise ClusterError(f"{node.name} exited ({node.process.returncode}) while starting; "
                                   f"see {node.dir}/log")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ClusterError(f"{node.name} did not start within {START_TIMEOUT}s; see {node.dir}/log")
            try:
                self.ctl(node, "await_startup", "--timeout", str(int(max(5, remaining))),
                         timeout=remaining + 10)
                return
            except ClusterError:
                # The CLI cannot reach a node whose distribution is not up yet.
                time.sleep(0.5)

    def start(self) -> RabbitCluster:
        """Start epmd and every node, join them, and wait until all run (ClusterError if not)."""
        started = time.monotonic()
        deadline = started + START_TIMEOUT
        try:
            self._write_files()
            self._epmd = subprocess.Popen(["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                                          env=self._env(), stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True)
            first, others = self.nodes[0], self.nodes[1:]
            self._start_process(first)
            self._await(first, deadline)
            for node in others:  # each finds the first running and joins it as it boots
                self._start_process(node)
            for node in others:
                self._await(node, deadline)
            joined = self.running_nodes(first)
            if joined != sorted(node.name for node in self.nodes):
                raise ClusterError(f"the nodes did not form one cluster: {first.name} sees {joined}")
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def running_nodes(self, via: Node | None = None) -> list[str]:
        """The cluster's running nodes, as the first running node (or ``via``) sees them."""
        via = via or next(node for node in self.nodes if node.running)
        status = json.loads(self.ctl(via, "cluster_status", "--formatter", "json"))
        return sorted(status.get("running_nodes", []))

    # -- one node ----------------------------------------------------------------------
    def stop_node(self, node: Node | str, kill: bool = False) -> None:
        """Stop one node by its PID: SIGTERM (a clean shutdown) or, with ``kill``, SIGKILL."""
        node = self.node(node) if isinstance(node, str) else node
        if node.running:
            node.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                node.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait(10)

    def start_node(self, node: Node | str) -> None:
        """Start a stopped node again (it rejoins the cluster from its data) and wait for it."""
        node = self.node(node) if isinstance(node, str) else node
        if not node.running:
            self._start_process(node)
        self._await(node, time.monotonic() + START_TIMEOUT)

    # -- vhosts and queues --------------------------------------------------------------
    def _any(self) -> Node:
        for node in self.nodes:
            if node.running:
                return node
        raise ClusterError("no node of the cluster is running")

    def add_vhost(self, name: str) -> None:
        """Create vhost ``name`` with every permission for guest (one CLI run)."""
        self.ctl(self._any(), "import_definitions",
                 stdin=vhost_definitions(name, CREDENTIALS.split(":")[0]))

    def delete_vhost(self, name: str) -> None:
        self.ctl(self._any(), "delete_vhost", name)

    def list_queues(self, vhost: str, *columns: str) -> dict[str, dict]:
        """``list_queues`` of ``vhost`` as {queue name: {column: value}} (JSON formatter)."""
        rows = json.loads(self.ctl(self._any(), "list_queues", "-p", vhost, "name", *columns,
                                   "--formatter", "json") or "[]")
        return {row["name"]: row for row in rows}

    def leaders(self, vhost: str) -> dict[str, str]:
        """{quorum queue name: the node holding its leader} in ``vhost``."""
        rows = self.list_queues(vhost, "type", "leader")
        return {name: row["leader"] for name, row in rows.items() if row.get("type") == "quorum"}

    # -- the end ------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every node and epmd started here (by PID) and remove the directory."""
        for node in self.nodes:
            if node.running:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait(10)
        if self._epmd is not None and self._epmd.poll() is None:
            self._epmd.terminate()
            try:
                self._epmd.wait(10)
            except subprocess.TimeoutExpired:
                self._epmd.kill()
                self._epmd.wait(10)
        if os.environ.get("FABRIC_KEEP_CLUSTER_DIR"):
            print(f"kept {self.dir} (FABRIC_KEEP_CLUSTER_DIR)", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RabbitCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_cluster(size: int = 3, base_port: int | None = None) -> Iterator[RabbitCluster]:
    """A started cluster for the block; stopped and removed after it."""
    with RabbitCluster(size, base_port) as cluster:
        yield cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tools/rabbitmq-cluster",
        description="Start a RabbitMQ cluster on loopback (own node names, ports, epmd and cookie), "
                    "print its URLs, then run COMMAND with FABRIC_RPC_TRANSPORT_URL set (or wait for "
                    "Ctrl-C / SIGTERM); stop every node and remove its data afterwards.")
    parser.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3)")
    parser.add_argument("--base-port", type=int, help="first port of the block the cluster uses "
                        "(AMQP base+1.., distribution base+101.., epmd base+200, CLI base+300..310); "
                        "default: a free block")
    parser.add_argument("--vhost", default="fabric", help="vhost to create (default fabric)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...] to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    cluster = RabbitCluster(args.nodes, args.base_port)
    stop_now = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop_now
        stop_now = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        cluster.start()
        cluster.add_vhost(args.vhost)
        url = cluster.transport_url(args.vhost)
        print(json.dumps({"transport_url": url, "nodes": [n.name for n in cluster.nodes],
                          "amqp_ports": [n.amqp_port for n in cluster.nodes],
                          "startup_seconds": round(cluster.startup_seconds, 1)}), flush=True)
        if command:
            return subprocess.run(command, env=dict(os.environ, FABRIC_RPC_TRANSPORT_URL=url),
                                  check=False).returncode
        while not stop_now:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    except ClusterError as exc:
        print(f"rabbitmq-cluster: {exc}", file=sys.stderr)
        return 1
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
