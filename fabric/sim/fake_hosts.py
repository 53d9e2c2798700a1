"""Many fake compute hosts in one process, for scale runs (``tools/bench/storm.py``).

``python -m fabric.sim.fake_hosts --config-file F --hosts 250 --prefix storm-p1-``
runs hosts ``storm-p1-1`` ... ``storm-p1-250``. Each is what a real hypervisor host runs,
with only the drivers fake: a ``fabric-compute`` worker (the real
:class:`~fabric.compute.manager.ComputeManager` on a
:class:`~fabric.virt.fake.driver.FakeDriver` of ``[compute] fake_*`` capacity) and a
``fabric-network`` worker (the real :class:`~fabric.network.manager.NetworkManager` on the
fake network driver), each a :class:`~fabric.service.Service` of its own: registered and
heartbeating in the services table, consuming ``compute.<host>`` / ``network.<host>`` (and
the shared queues), reporting its resources into ``compute_nodes`` and running its periodic
tasks. The fanouts every host must see are consumed once per process and topic and handed
to each started host's manager (:mod:`fabric.sim.fanout`): decoded once, not once per host.
What that consumer drops reaches ``fabric-manage status`` as a real worker's fanout drops do,
with the heartbeats: what it gave up on for a host in that host's services row, what it
refused for all the process's hosts (unsigned, forged, stale ...) in the first host's row of
the topic only, marked as lost to every host of the process (one problem line per process
and topic, not one per host, and it says so).
Each host keeps its own data directory (``<data_dir>/hosts/<host>``:
its image cache and its fake guests' disks), as machines share no disk.

What the hosts of one process share, as the workers of ``fabric-all`` do: the broker
transport, the database pool, and one set of compute collaborators, hence one cast outbox
(:mod:`fabric.rpc.outbox` wants one per worker kind and process: its relay takes over what
a dead writer of its kind left). Each host's image source is its own (its own cache).

Start-up is staggered: host ``i`` of ``n`` starts ``i * interval / n`` seconds after the
first, ``interval`` being the shortest of the heartbeat and periodic-task spacings, so a
thousand hosts' heartbeats and resource reports spread evenly over each interval instead
of arriving together (their timers start when their service does). ``--stagger 0`` starts
them as fast as they come up.

A host's workers keep their broker consumers (of their two queues), each on a channel of its own; the process's
consumers share one AMQP connection (:mod:`fabric.rpc.amqp`), so a process of 20 hosts holds
two connections to RabbitMQ (consuming and publishing), not the 41 it held with a connection
per consumer, which at 1,000 hosts ran the broker out of file descriptors.

The hosts share one database pool where real hosts have one each, so the work must wait in
the hosts' queues, not for the pool: each worker handles at most ``--handlers`` messages at
once and holds as many unacknowledged (``[rpc] executor_size`` and ``prefetch`` of this
process), the hosts' workers of each topic together at most their share of the pool's
connections, and the hosts' periodic tasks together theirs (:data:`SHARES`). With 64 handlers
per worker, 125 hosts' handlers queued for the pool's connections until their 30 s wait ran
out; with 2 per worker but no bound per process, 250 hosts (1,000 handlers) did the same: each
handler holding a connection waited its turn behind hundreds of runnable others, so
connections were held ever longer (about 2,200 QueuePool timeouts in the first 1,000-host
``tools/bench/storm.py``, builds failing and rescheduled); with the handlers bounded but not
the periodic tasks, the 1,000 periodic tasks of 250 hosts did (about 6,200 timeouts in the
second, deletes ending in ERROR). The bounds are apart, not one for all: a
build holds its compute handler while it calls its own host's network worker, here in this
process, and a periodic task may call a worker of its host too.
"""

if __name__ == "__main__":  # monkey-patch first, as every launcher does (never when imported)
    import fabric.cmd.eventlet_entry  # noqa: F401, I001

import dataclasses  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import eventlet  # noqa: E402
from eventlet.semaphore import Semaphore  # noqa: E402

from fabric import config, rpc  # noqa: E402
from fabric.compute.collaborators import ObjectstoreImages, default_collaborators  # noqa: E402
from fabric.compute.manager import ComputeManager  # noqa: E402
from fabric.db import Database  # noqa: E402
from fabric.network.drivers.fake import FakeDriver as FakeNetworkDriver  # noqa: E402
from fabric.network.manager import NetworkManager  # noqa: E402
from fabric.service import Service, serve  # noqa: E402
from fabric.sim.fanout import DEFAULT_LANES, HostFanout  # noqa: E402
from fabric.virt.fake.driver import FakeDriver  # noqa: E402

LOG = logging.getLogger(__name__)

#: The workers of one fake host, in start order (network first: compute plugs through it).
WORKERS = (("fabric-network", "network"), ("fabric-compute", "compute"))
#: The queues each host's worker consumes itself: the process takes the fanouts for all of them.
HOST_QUEUES = ("shared", "host")
#: The share of the process's database connections the hosts' handlers of each topic may hold
#: at once between them, and their periodic tasks (resource reports, power syncs, security
#: resyncs), of those the fanout lanes (:mod:`fabric.sim.fanout`, one each at most) leave; the
#: rest serves the heartbeats.
SHARES = {"compute": 0.5, "network": 0.25, "periodic": 0.15}


def host_names(prefix: str, count: int, first: int = 1) -> list[str]:
    """``prefix1`` ... ``prefix<count>`` (numbered from ``first``)."""
    return [f"{prefix}{number}" for number in range(first, first + count)]


def host_settings(settings: config.Settings, host: str) -> config.Settings:
    """The settings one fake host runs with: its name, its own data directory, fake drivers."""
    data_dir = Path(settings.default.data_dir) / "hosts" / host
    return settings.replace(default={"host": host, "data_dir": str(data_dir)},
                            compute={"driver": "fake"}, network={"driver": "fake"})


def stagger_interval(settings: config.Settings) -> float:
    """The shortest spacing of the recurring work a host does (heartbeat, resource report,
    power sync, reaper): spreading the hosts' starts over it spreads all of them."""
    return min(settings.service.report_interval, settings.compute.resource_report_interval,
               settings.compute.power_sync_interval, settings.compute.reap_interval)


def work_limiters(db: Database, lanes: int = DEFAULT_LANES) -> dict[str, Semaphore]:
    """By topic, the bound its hosts' handlers share, and (``periodic``) the bound of the hosts'
    periodic tasks: :data:`SHARES` of what ``lanes`` fanout lanes leave of ``db``'s pool, at
    least one each; none on a database whose pool this process does not bound (SQLite)."""
    if db.capacity is None:
        return {}
    left = max(0, db.capacity - lanes)
    return {kind: Semaphore(max(1, int(left * share))) for kind, share in SHARES.items()}


def build_services(settings: config.Settings, hosts: list[str], *, db: Database, transport: Any,
                   address: str = "127.0.0.1", lanes: int = DEFAULT_LANES) -> list[Service]:
    """A network and a compute :class:`Service` per host in ``hosts`` over the shared ``db`` and
    ``transport`` (not started), in start order, consuming no fanout (:func:`build_fanouts`), the
    handlers of each topic bounded together, and their periodic tasks (:func:`work_limiters`, beside
    ``lanes`` fanout lanes).
    Raises ValueError for a repeated host name."""
    if len(set(hosts)) != len(hosts):
        raise ValueError(f"host names repeat: {sorted(h for h in set(hosts) if hosts.count(h) > 1)}")
    shared = default_collaborators(settings, db, transport)  # one outbox for every host here
    limiters = work_limiters(db, lanes)
    services = []
    for host in hosts:
        own = host_settings(settings, host)
        managers = {
            "network": NetworkManager(own, host=host, db=db, transport=transport,
                                      driver=FakeNetworkDriver(own)),
            "compute": ComputeManager(own, host=host, db=db, transport=transport,
                                      driver=FakeDriver.from_settings(own),
                                      **(shared | {"images": ObjectstoreImages.from_settings(own, db)})),
        }
        services += [Service(own, binary, topic, managers[topic], host=host, transport=transport, db=db,
                             address=address, consume=HOST_QUEUES, limiter=limiters.get(topic),
                             periodic_limiter=limiters.get("periodic"))
                     for binary, topic in WORKERS]
    return services


def build_fanouts(services: list[Service], transport: Any, name: str,
                  lanes: int = DEFAULT_LANES) -> dict[str, HostFanout]:
    """The fanout consumer of each topic of ``services`` (by topic), handing each fanout to
    those services' managers; its queue named after ``name`` (the process's host name).
    Each service's heartbeat reports what its topic's consumer dropped for its host
    (:attr:`fabric.service.Service.fanout`), and the first host's also what it dropped for
    all of them (:attr:`fabric.sim.fanout.HostFanout.reporter`), under codes that say so
    (:func:`fabric.servicegroup.process_wide`)."""
    by_topic: dict[str, list[Service]] = {}
    for service in services:
        by_topic.setdefault(service.topic, []).append(service)
    fanouts = {}
    for topic, members in by_topic.items():
        fanouts[topic] = HostFanout(transport, topic, name, [service.manager for service in members], lanes=lanes)
        for service in members:
            service.fanout = fanouts[topic]
    return fanouts


@dataclasses.dataclass
class _StaggeredStart:
    """A service whose :meth:`start` waits for its moment (``at``, a time.monotonic() value)
    first; everything else is the service's (what :func:`fabric.service.serve` calls)."""

    service: Service
    at: float
    #: Logged once this service has started (the last of a process's says so).
    announce: str = ""
    #: The process's fanout of the service's topic: hands the host fanouts once it has started.
    fanout: HostFanout | None = None

    def start(self) -> None:
        eventlet.sleep(max(0.0, self.at - time.monotonic()))
        self.service.start()
        if self.fanout is not None:
            self.fanout.admit(self.service.host)
        if self.announce:
            LOG.warning("%s", self.announce)

    def stop(self) -> None:
        self.service.stop()

    def wait(self, timeout: float | None = None) -> bool:
        return self.service.wait(timeout)


def staggered(services: list[Service], spread: float, fanouts: dict[str, HostFanout] | None = None) -> list[Any]:
    """``services`` (in host pairs, as :func:`build_services` gives them) started over
    ``spread`` seconds from now, a host's workers together; the ``fanouts`` (by topic, as
    :func:`build_fanouts` gives them) first, each host admitted to its topic's once its
    worker has started."""
    fanouts = fanouts or {}
    per_host = len(WORKERS)
    hosts = max(1, len(services) // per_host)
    origin = time.monotonic()
    starts = [_StaggeredStart(service, origin + (index // per_host) * spread / hosts,
                              fanout=fanouts.get(service.topic))
              for index, service in enumerate(services)]
    if starts:
        starts[-1].announce = f"fake_hosts: all {hosts} hosts started"
    return [*fanouts.values(), *starts]


def main(argv: list[str] | None = None) -> int:
    """Run the fake hosts until SIGTERM/SIGINT; exit status (2 with one line for a bad setting)."""
    from fabric.cmd import common

    return common.clean_errors(_run)(argv)


def _run(argv: list[str] | None) -> int:
    from fabric.cmd import common, launcher
    from fabric.rpc import signing

    parser = launcher.build_parser("fake_hosts", __doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, required=True, help="how many fake hosts this process runs")
    parser.add_argument("--prefix", required=True, help="host names are <prefix>1 ... <prefix>N")
    parser.add_argument("--first", type=int, default=1, help="number of the first host (default 1)")
    parser.add_argument("--handlers", type=int, default=2,
                        help="messages each host's worker handles at once (default 2; see above)")
    parser.add_argument("--fanout-lanes", type=int, default=DEFAULT_LANES,
                        help=f"green threads handing each fanout to the hosts (default {DEFAULT_LANES}; "
                             "see fabric.sim.fanout)")
    parser.add_argument("--stagger", type=float, default=None,
                        help="seconds over which the hosts start (default: the shortest periodic spacing)")
    args = parser.parse_args(argv)
    if args.hosts < 1 or args.handlers < 1 or args.fanout_lanes < 1:
        parser.error(f"--hosts {args.hosts}, --handlers {args.handlers}, --fanout-lanes {args.fanout_lanes}: "
                     "each at least 1")
    settings = common.load_settings(args)
    settings = settings.replace(rpc={"executor_size": args.handlers, "prefetch": args.handlers})
    signing.install(signing.from_settings(settings, [topic for _, topic in WORKERS]))
    db = launcher.open_database(settings, sync_if_empty=False)
    transport = rpc.get_transport(settings.rpc)
    try:
        hosts = host_names(args.prefix, args.hosts, args.first)
        services = build_services(settings, hosts, db=db, transport=transport,
                                  address=settings.service.advertise_address or "127.0.0.1",
                                  lanes=args.fanout_lanes)
        fanouts = build_fanouts(services, transport, settings.default.host, args.fanout_lanes)
        spread = stagger_interval(settings) if args.stagger is None else max(0.0, args.stagger)
        LOG.warning("fake_hosts: starting %d hosts %s ... %s over %.1fs", len(hosts), hosts[0], hosts[-1], spread)
        return serve(staggered(services, spread, fanouts), settings)
    finally:
        transport.cleanup()
        db.dispose()


if __name__ == "__main__":
    sys.exit(main())
