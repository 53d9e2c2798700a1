"""The network worker's RPC endpoint: one per host, driving that host's data plane.

Handlers take and return JSON (specs as dicts, see :mod:`fabric.network.model`)
and are idempotent: a redelivered message converges to the same kernel state.
One driver operation runs at a time (a green semaphore), so two messages never
interleave their kernel steps. Changes every host must see arrive by fanout
cast and are applied at once: ``host_joined``/``host_left`` from IPAM when a
host is added to or removed from the topology (a new tunnel peer, a route to
its block), ``network_deleted`` from the API. A network's devices exist only on
the hosts that have ports on it: the first ``plug`` on a host sets the network
up there, the last ``unplug`` removes it (``network_created`` changes nothing). On start the
worker reconciles the kernel with the database, topology included, so a worker
that was down when a fanout went out catches up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import eventlet
import sqlalchemy as sa
from eventlet.semaphore import Semaphore

from fabric import config, exception, metrics, periodic
from fabric.coalescing import Coalesced
from fabric.context import RequestContext
from fabric.db.models import Network, SecurityGroupRule
from fabric.manager import Manager, callers_table
from fabric.network import dbstate, drivers
from fabric.network.drivers.base import NetworkDriver
from fabric.network.model import NETWORK_TYPES, EndpointSpec, FloatingSpec, HostSpec, HostState, NetworkSpec, RoutedSpec
from fabric.network.rpcapi import NetworkAPI
from fabric.reconcile import Finding, Fixes, log_findings
from fabric.reconcile import networks as network_drift
from fabric.reconcile import report as drift_report
from fabric.rpc import idempotent

LOG = logging.getLogger(__name__)
T = TypeVar("T")


class NetworkManager(Manager):
    """Owns this host's bridges, tunnels, routes, DHCP servers and NAT rules."""

    topic = "network"
    #: Who may call each handler (checked on the message's signature before dispatch).
    rpc_callers = callers_table(
        setup_network=("api", "compute"), teardown_network=("api", "compute"),
        plug=("compute",), unplug=("compute",), set_routed=("compute",),
        associate_floating=("api",), disassociate_floating=("api",),
        sync=("api",), describe_host_networking=("api",),
        host_joined=("ipam",), host_left=("ipam",),
        network_created=("api",), network_deleted=("api",), network_changed=("api",), reconcile_networks=("api",),
        security_groups_changed=("api", "network"), security_members_changed=("network",),
        security_members_changed_many=("network",),
        routers_changed=("api",))

    def __init__(self, settings: config.Settings, host: str | None = None, db: Any = None,
                 transport: Any = None, driver: NetworkDriver | None = None) -> None:
        super().__init__(settings, host=host, db=db, transport=transport)
        self.driver = driver or drivers.load(settings)
        self.driver.host = self.host  # the name this worker serves, whatever the settings say
        self._one_at_a_time = Semaphore(1)
        self._security_sync = Coalesced(lambda: self._converge(
            "security_groups_changed", lambda: self.driver.set_security(dbstate.security_state(self.db, self.host))))
        #: Membership announcements not yet applied, in arrival order (security_members_changed).
        self._member_changes: list[tuple[str, list[str], tuple[str, ...]]] = []
        self._member_sync = Coalesced(lambda: self._converge("security_members_changed", self._apply_member_changes))

    def _serialised(self, fn: Callable[..., T], *args: Any) -> T:
        with self._one_at_a_time:
            return fn(*args)

    def capabilities(self) -> dict[str, Any]:
        return {"driver": self.settings.network.driver, "network_types": list(NETWORK_TYPES),
                "tunnel_address": self.settings.network.tunnel_address or None}

    # --- lifecycle --------------------------------------------------------------------

    def init_host(self) -> None:
        """Reconcile the kernel with the database (when there is one) before consuming,
        and serve guests their metadata from it (``[metadata] enabled``).
        """
        if self.db is None:
            LOG.info("network: no database; not reconciling %s", self.host)
            return
        if self.settings.metadata.enabled:
            self._serialised(self.driver.serve_metadata, self.db)
        state = dbstate.host_state(self.db, self.host, self.settings)
        # Before the sync, so one rebuild applies both (and rules that no longer belong go).
        self.driver.security = dbstate.security_state(self.db, self.host)
        summary = self._serialised(self.driver.sync, state)
        LOG.info("network: reconciled %s: created %s, removed %s", self.host,
                 summary.get("created"), summary.get("removed"))

    def cleanup_host(self) -> None:
        """Stop what the driver runs (DHCP servers); the kernel's objects stay for the next start."""
        self.driver.stop()

    # --- host calls ---------------------------------------------------------------------

    @idempotent
    def setup_network(self, ctx: RequestContext, network: dict[str, Any]) -> dict[str, Any]:
        """The network exists on this host; returns how the host describes it."""
        spec = NetworkSpec.from_dict(network)
        self._serialised(self.driver.setup_network, spec)
        return self.driver.describe()["networks"].get(spec.id, {})

    @idempotent
    def teardown_network(self, ctx: RequestContext, network_id: str) -> None:
        self._serialised(self.driver.teardown_network, network_id)

    @idempotent
    def plug(self, ctx: RequestContext, endpoint: dict[str, Any],
             network: dict[str, Any] | None = None) -> dict[str, Any]:
        """Plug an endpoint (setting its network up first when given); returns its device."""
        spec = EndpointSpec.from_dict(endpoint)

        def plug() -> tuple[dict[str, Any], tuple[list[str], tuple[str, ...]] | None, bool]:
            membership = None  # the port's (groups, addresses), as the database has them
            named = False  # whether a rule just read names one of the port's groups as remote
            if network is not None:
                self.driver.setup_network(NetworkSpec.from_dict(network))
            if self.db is not None:  # the port is filtered from the moment its device exists
                # Remote members this host holds are kept (announcements keep them current; a full
                # read per plug cost every member's row: 13 ms of CPU with 3,000), the port's own
                # membership put in as the announcement below says it.
                with self.db.read() as session:
                    security = dbstate.security_state_in(session, self.host, known=self.driver.security)
                    # The port's groups are among its host's just read, its addresses in the endpoint
                    # (read with it): no read of its own, and none of its network's subnets again.
                    membership = dbstate.plugged_membership(spec, security)
                    if membership is None:  # not a port of this host's, as the database has it
                        membership = dbstate.port_membership(session, spec.id)
                    # ... and routed by the routers on its network from then on (plug applies the NAT table).
                    routers = dbstate.router_specs(session, sorted(set(self.driver.state.networks) | {spec.network_id}))
                security.change_members([(spec.id, *membership)])
                named = security.names_as_remote(membership[0])
                self.driver.security = security
                self.driver.state.routers = routers
            return self.driver.plug(spec), membership, named

        with metrics.NETWORK_PLUG_SECONDS.time():
            device, membership, named = self._serialised(plug)
        if spec.id in self.driver.security.ports:
            self._announce_membership(ctx, spec.id, self.driver.security.ports[spec.id], joined=True,
                                      membership=membership, named_as_remote=named)
        return device

    @idempotent
    def unplug(self, ctx: RequestContext, endpoint_id: str) -> None:
        groups = self.driver.security.ports.get(endpoint_id)
        self._serialised(self.driver.unplug, endpoint_id)
        if groups is not None:
            self._announce_membership(ctx, endpoint_id, groups, joined=False)

    def _announce_membership(self, ctx: RequestContext, endpoint_id: str, groups: list[str], joined: bool,
                             membership: tuple[list[str], tuple[str, ...]] | None = None,
                             named_as_remote: bool = False) -> None:
        # Every host may hold this port's address in a remote group's set: when a rule names one
        # of its groups as remote. When none does, no host's sets hold it, and the fanout would
        # only cost every host a message for nothing (one fanout to N hosts per plug and unplug).
        # ``named_as_remote``: a rule the plug has just read names one (no need to ask again);
        # otherwise a rule of a group on no port of this host may, so the database is asked.
        # A plugged port is announced with its groups and addresses as the database has them
        # (``membership``, which the plug read); an unplugged one as leaving every group (its port
        # row goes next, unannounced).
        if self.transport is None or not groups:
            return
        addresses: tuple[str, ...] = ()
        if self.db is not None:
            if not named_as_remote:
                with self.db.read() as session:
                    if session.scalar(sa.select(SecurityGroupRule.id).where(
                            SecurityGroupRule.remote_group_id.in_(groups)).limit(1)) is None:
                        return
            if joined and membership is not None:
                groups, addresses = membership
        Announcements.of(self.transport).add(ctx, endpoint_id, groups if joined else [], list(addresses))

    @idempotent
    def associate_floating(self, ctx: RequestContext, address: str, fixed_address: str) -> None:
        spec = FloatingSpec(address, fixed_address)
        if self.db is not None:  # where its external network puts it (see fabric.network.edge)
            with self.db.begin() as session:
                spec = dbstate.floating_spec(session, address, fixed_address)
        self._serialised(self.driver.associate_floating, spec)

    @idempotent
    def disassociate_floating(self, ctx: RequestContext, address: str) -> None:
        self._serialised(self.driver.disassociate_floating, address)

    @idempotent
    def set_routed(self, ctx: RequestContext, routed: dict[str, Any] | None) -> None:
        self._serialised(self.driver.set_routed, RoutedSpec.from_dict(routed) if routed else None)

    @idempotent
    def sync(self, ctx: RequestContext, state: dict[str, Any]) -> dict[str, Any]:
        """Converge to exactly ``state`` (a HostState dict); returns what changed."""
        return self._serialised(self.driver.sync, HostState.from_dict(state))

    @idempotent
    def describe_host_networking(self, ctx: RequestContext) -> dict[str, Any]:
        return self._serialised(self.driver.describe)

    # --- reconciliation ---------------------------------------------------------------------------

    def _drift(self, fixes: Fixes) -> list[Finding]:
        if self.db is None:
            raise exception.Invalid(reason=f"network worker on {self.host} has no database to reconcile with")

        def find_and_fix() -> list[Finding]:
            # Under the worker's lock: a report taken mid-plug would show half a plug as drift.
            state = dbstate.host_state(self.db, self.host, self.settings)
            findings = network_drift.find(self.driver, state)
            if fixes:
                network_drift.fix(self.driver, state, findings, fixes)
            return findings

        return self._serialised(find_and_fix)

    def reconcile_networks(self, ctx: RequestContext, fixes: dict[str, bool] | None = None) -> dict[str, Any]:
        """This host's network drift (:mod:`fabric.reconcile.networks`), repairing the kinds
        ``fixes`` names (a :class:`~fabric.reconcile.Fixes` dict; none: report only).
        Returns ``{"host", "findings"}``. Raises Invalid for a bad ``fixes`` or no database."""
        return drift_report(self.host, self._drift(Fixes.from_dict(fixes)))

    @periodic.periodic_task(lambda self: self.settings.network.drift_report_interval)
    def report_network_drift(self, ctx: RequestContext) -> int:
        """Log this host's network drift, one line per finding (fixes nothing); returns how many."""
        if self.db is None:
            return 0
        findings = self._drift(Fixes())
        log_findings(LOG, "networks", self.host, findings)
        return len(findings)

    # --- fanout: topology changes -------------------------------------------------------------

    def _converge(self, what: str, fn: Callable[..., Any], *args: Any) -> None:
        # A fanout cast reaches every host; a host that cannot apply it (say, a
        # flat bridge it lacks) logs why instead of dead-lettering everyone's copy.
        try:
            self._serialised(fn, *args)
        except exception.FabricError as exc:
            LOG.error("network: %s on %s failed: %s", what, self.host, exc.message)

    def host_joined(self, ctx: RequestContext, host: dict[str, Any]) -> None:
        self._converge("host_joined", self.driver.host_joined, HostSpec.from_dict(host))

    def host_left(self, ctx: RequestContext, name: str) -> None:
        self._converge("host_left", self.driver.host_left, name)

    def network_created(self, ctx: RequestContext, network: dict[str, Any]) -> None:
        """Nothing to set up: a new network has no ports, and a host sets a network up when
        the first of its ports is plugged there (the plug carries the network's spec)."""
        LOG.debug("network: %s created; %s sets it up when it plugs a port of it",
                  network.get("id"), self.host)

    def network_deleted(self, ctx: RequestContext, network_id: str) -> None:
        self._converge("network_deleted", self.driver.teardown_network, network_id)

    def network_changed(self, ctx: RequestContext, network_id: str) -> None:
        """The network's committed settings differ from what this host realised (a subnet's DHCP
        turned on or off): a host carrying it applies what the database now says (its DHCP
        server started or stopped); a host without it has nothing to do."""
        if self.db is None:
            return

        def apply() -> None:
            if network_id not in self.driver.state.networks:
                return
            with self.db.begin() as session:
                network = session.get(Network, network_id)
                if network is None:  # deleted meanwhile: network_deleted takes it down
                    return
                _, layout = dbstate.datacenter_layout(session)
                spec = dbstate.network_spec(session, network, self.host, layout)
            self.driver.setup_network(spec)
            LOG.info("network: %s re-applied on %s (DHCP %s)", network_id, self.host, "on" if spec.dhcp else "off")

        self._converge("network_changed", apply)

    def security_groups_changed(self, ctx: RequestContext) -> None:
        """Groups, rules or memberships changed: enforce what the database now says.

        A burst of these costs one read and rebuild at a time, not one each (during a rolling
        upgrade every plug of a port in a group that a rule names as remote sends one: see
        :meth:`security_members_changed`): a message that arrives during a run returns at once,
        and the run goes round once more after it (:mod:`fabric.coalescing`). Such a message is
        acked before its run ends; a worker that dies in between reads everything afresh at start
        (init_host).
        """
        if self.db is None:
            return
        self._security_sync.request()

    def security_members_changed(self, ctx: RequestContext, port_id: str, groups: list[str],
                                 addresses: list[str]) -> None:
        """Port ``port_id`` is now a member of exactly ``groups`` with ``addresses`` (no groups:
        of none): in the sets of the remote groups this host holds, that port's addresses alone
        change (no database read; the driver adds and deletes those addresses only).

        Announcements arriving while others are applied are applied together next, in arrival
        order (:mod:`fabric.coalescing`), after any full read running (one lock), so a read
        never undoes a later announcement. Such a message is acked before it is applied; a host
        that misses one converges at its next full read (at start, on a group or rule change,
        and every ``[network] security_resync_interval``).
        """
        self._member_changes.append((port_id, list(groups), tuple(addresses)))
        self._member_sync.request()

    def security_members_changed_many(self, ctx: RequestContext, changes: list[dict[str, Any]]) -> None:
        """:meth:`security_members_changed` for each of ``changes`` (``{"port_id", "groups",
        "addresses"}``), in their order: what another process announced over a moment
        (:class:`Announcements`)."""
        self._member_changes.extend((change["port_id"], list(change["groups"]), tuple(change["addresses"]))
                                    for change in changes)
        self._member_sync.request()

    def _apply_member_changes(self) -> None:
        changes, self._member_changes = self._member_changes, []
        made = self.driver.security.change_members(changes)
        if made:
            self.driver.change_members(made)

    @periodic.periodic_task(lambda self: self.settings.network.security_resync_interval)
    def resync_security(self, ctx: RequestContext) -> None:
        """Enforce what the database says now (see :meth:`security_members_changed`)."""
        if self.db is not None:
            self._security_sync.request()

    def routers_changed(self, ctx: RequestContext) -> None:
        """Routers, their legs or gateways changed: realise what the database now says for the
        networks this host carries."""
        if self.db is None:
            return

        def apply() -> None:
            with self.db.begin() as session:
                routers = dbstate.router_specs(session, sorted(self.driver.state.networks))
            self.driver.set_routers(list(routers.values()))
            LOG.info("network: %d router(s) realised on %s", len(routers), self.host)

        self._converge("routers_changed", apply)


class Announcements:
    """The membership announcements of one process's network workers (one per transport),
    sent together: the first waits :data:`ANNOUNCE_DELAY` seconds for others, then all go in
    one fanout (``security_members_changed_many``), in the order they were made.

    Every host receives and decodes every fanout: in a boot storm of N hosts on one machine a
    fanout per plug costs N deliveries per server; a process running many hosts (fabric.sim)
    sends one per moment instead. A remote host learns of a port up to the delay later (the
    guest is still being spawned); an announcement lost with its process is caught up by
    every host's next full read (``[network] security_resync_interval``), as a lost fanout is.
    """

    #: Seconds the first announcement of a batch waits for others.
    ANNOUNCE_DELAY = 0.1
    _by_transport: dict[int, Announcements] = {}

    def __init__(self, transport: Any) -> None:
        self.api = NetworkAPI(transport)
        self.pending: list[dict[str, Any]] = []
        self._ctx: RequestContext | None = None

    @classmethod
    def of(cls, transport: Any) -> Announcements:
        """The announcements of ``transport``'s process (made on first use)."""
        found = cls._by_transport.get(id(transport))
        if found is None or found.api.client.transport is not transport:
            found = cls._by_transport[id(transport)] = cls(transport)
        return found

    def add(self, ctx: RequestContext, port_id: str, groups: list[str], addresses: list[str]) -> None:
        """Announce that ``port_id`` is now a member of exactly ``groups`` with ``addresses``
        (sent within :data:`ANNOUNCE_DELAY`; the batch carries the first one's context)."""
        self.pending.append({"port_id": port_id, "groups": groups, "addresses": addresses})
        if self._ctx is None:
            self._ctx = ctx
            eventlet.spawn_after(self.ANNOUNCE_DELAY, self.flush)

    def flush(self) -> None:
        """Send what is pending now (nothing when nothing is)."""
        changes, ctx, self.pending, self._ctx = self.pending, self._ctx, [], None
        if not changes or ctx is None:
            return
        try:
            if len(changes) == 1:  # what a worker of this release with one host mostly sends
                self.api.security_members_changed(ctx, **changes[0])
            else:
                self.api.security_members_changed_many(ctx, changes)
        except exception.FabricError as exc:
            LOG.error("network: could not announce the group membership of %s: %s",
                      ", ".join(c["port_id"] for c in changes), exc.message)
