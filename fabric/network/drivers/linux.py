"""The real driver: bridges, VXLAN/VLAN devices, taps and veths, routes, DHCP, NAT.

All kernel work goes through :class:`~fabric.network.kernel.Kernel` for the
host's namespace (a simulated host in tests is a namespace passed in here).
Per network type:

- ``flat``: endpoints join an existing bridge that fabric does not own.
- ``vlan``: an 802.1Q device on the trunk interface, enslaved to a bridge per network.
- ``vxlan``: a VXLAN device (the network's VNI, this host's tunnel address, learning
  off) enslaved to a bridge per network, with one all-zero FDB entry per remote
  host's tunnel address, so broadcast and unknown unicast reach every host without
  multicast. The list names every host of the topology, not only those with ports on
  the network: when a host's last port leaves and its devices go, the others keep
  their entry toward it, and its kernel drops frames for a VNI it has no device for.
- ``routed`` (Romana's L3 mode): a gateway device holding this host's gateway
  address, proxy ARP on every endpoint device, a /32 route per local endpoint and
  exactly one route per remote host (its block via its tunnel address). A guest
  takes its address by DHCP from one dnsmasq per host, serving exactly the host's
  addressed routed endpoints (of every routed network) from the gateway address: a
  /32 lease whose classless static routes put the gateway on-link and the default
  route via it (see :mod:`fabric.network.dhcp`). It runs while the host has such an
  endpoint and goes with the last.

The edge (:mod:`fabric.network.edge`): with ``[network] external_interfaces``, the
floating and router gateway addresses of a mapped external network are put on the
host's interface to it (marked proto 176), so the outside reaches them on-link; fabric's
nftables table translates them (:mod:`fabric.network.nat`).

Announcements: when an addressed endpoint of an L2 network is plugged (a guest boots, a
moved guest arrives) and when an address is put on an external interface, the host sends
gratuitous ARP for it (from the endpoint's MAC on its bridge; from the interface's own MAC
there), so neighbours holding a stale entry for the address replace it at once.

The metadata service (once :meth:`LinuxDriver.serve_metadata` is called): the
address 169.254.169.254/32 is put on the namespace's loopback, so it is local
and the host answers ARP for it on every device (as nova-network did), and
:class:`~fabric.metadata.server.MetadataServer` listens on it on each L2
network's bridge and each routed endpoint's device. Guests reach it on-link
or through their DHCP server's address (the bridge's address).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from typing import Any

from fabric import exception
from fabric.config import Settings
from fabric.metadata import METADATA_ADDRESS
from fabric.metadata.server import MetadataServer
from fabric.network import edge, nat, secgroups
from fabric.network.dhcp import DhcpServers, entry_text
from fabric.network.drivers.base import NetworkDriver
from fabric.network.kernel import Kernel
from fabric.network.model import EndpointSpec, HostState, NetworkSpec

LOG = logging.getLogger(__name__)

#: The name of the host's DHCP server for its routed endpoints (the others are named by network id).
ROUTED_DHCP = "_routed"


class LinuxDriver(NetworkDriver):
    def __init__(self, settings: Settings, netns: str | None = None, state_dir: str | None = None) -> None:
        super().__init__(settings)
        self.netns = netns
        self.kernel = Kernel(netns)
        self.state_dir = state_dir or os.path.join(settings.default.data_dir, "network", self.host)
        self.dhcp = DhcpServers(self.kernel, self.state_dir, settings.network.dnsmasq)
        self._applied_ruleset: str | None = None
        self._applied_security: secgroups.Plan | None = None
        self.metadata: MetadataServer | None = None
        self.external_interfaces = edge.interface_map(settings.network.external_interfaces)

    # --- names -----------------------------------------------------------------------

    def bridge_of(self, network: NetworkSpec) -> str | None:
        if network.network_type == "flat":
            return network.physical_bridge
        if network.network_type == "routed":
            return None
        return self.names.bridge(network.id)

    def _own_links(self, network: NetworkSpec) -> list[str]:
        """Links fabric creates for the network, in deletion order."""
        if network.network_type == "vxlan":
            return [self.names.vxlan(network.id), self.names.bridge(network.id)]
        if network.network_type == "vlan":
            return [self.names.vlan(network.id), self.names.bridge(network.id)]
        return []

    def _wanted_links(self, state: HostState | None = None) -> set[str]:
        """Names of the links fabric should hold for ``state`` (default: the driver's)."""
        state = self.state if state is None else state
        wanted = {self.names.endpoint(e) for e in state.endpoints}
        for network in state.networks.values():
            wanted.update(self._own_links(network))
        if state.routed is not None:
            wanted.add(self.names.gateway)
        return wanted

    # --- networks --------------------------------------------------------------------------

    def _apply_network(self, network: NetworkSpec) -> None:
        bridge = self.bridge_of(network)
        if network.network_type == "flat":
            if self.kernel.link(bridge) is None:
                raise exception.Invalid(reason=f"flat network {network.id}: bridge {bridge!r} does not "
                                               f"exist in {self.kernel.where}; accepted: an existing bridge")
        elif network.network_type in ("vxlan", "vlan"):
            self.kernel.ensure_bridge(bridge, mtu=network.mtu)
            if network.network_type == "vxlan":
                self._apply_vxlan(network, bridge)
            else:
                self._apply_vlan(network, bridge)
        else:
            self._apply_topology()
        if bridge is not None and network.host_address and network.network_type != "flat":
            for cidr in self.kernel.addresses(bridge):
                if cidr != network.host_address:
                    self.kernel.remove_address(bridge, cidr)
            self.kernel.ensure_address(bridge, network.host_address)
        if bridge is not None and network.ipv6_address and network.network_type != "flat":
            self._apply_ipv6(bridge, network.ipv6_address)
        self._apply_dhcp(network.id)
        self._apply_nat()
        self._apply_metadata()

    def _apply_ipv6(self, bridge: str, cidr: str) -> None:
        """IPv6 on ``bridge`` (off by default in a namespace made off, as tests make them) with
        ``cidr`` on it, the address its router advertisements and DHCPv6 answers come from.
        The bridge takes no advertisements itself (the host is the network's advertiser) and
        skips duplicate detection (its address is the host's by allocation), so it is usable at once."""
        for key, value in (("accept_ra", "0"), ("accept_dad", "0"), ("disable_ipv6", "0")):
            self.kernel.set_sysctl(f"net/ipv6/conf/{bridge}/{key}", value)
        self.kernel.ensure_address(bridge, cidr)

    def _apply_vxlan(self, network: NetworkSpec, bridge: str) -> None:
        local = self.settings.network.tunnel_address
        if not local:
            raise exception.NetworkTypeUnsupported(
                network_type="vxlan", reason="[network] tunnel_address is empty on host "
                                             f"{self.host}; set it to this host's underlay address")
        device = self.names.vxlan(network.id)
        self.kernel.ensure_vxlan(device, network.segmentation_id, local, self.settings.network.vxlan_port,
                                 master=bridge, mtu=network.mtu)
        self._apply_flood_list(device)

    def _apply_flood_list(self, device: str) -> None:
        wanted = {h.tunnel_address for h in self.state.remote_hosts.values()}
        present = set(self.kernel.flood_destinations(device))
        for remote in sorted(wanted - present):
            self.kernel.add_flood_destination(device, remote)
        for remote in sorted(present - wanted):
            self.kernel.remove_flood_destination(device, remote)

    def _apply_vlan(self, network: NetworkSpec, bridge: str) -> None:
        trunk = self.settings.network.trunk_interface
        if not trunk:
            raise exception.NetworkTypeUnsupported(
                network_type="vlan", reason=f"[network] trunk_interface is empty on host {self.host}; "
                                            "set it to the interface carrying 802.1Q traffic")
        try:
            self.kernel.ensure_vlan(self.names.vlan(network.id), trunk, network.segmentation_id,
                                    master=bridge, mtu=network.mtu)
        except exception.KernelError as exc:
            if exc.fields.get("errno") == 95:  # EOPNOTSUPP: no 8021q in this kernel
                raise exception.NetworkTypeUnsupported(
                    network_type="vlan", reason=f"the kernel has no 802.1Q VLAN devices ({exc.message})") from None
            raise

    def _remove_network(self, network_id: str, network: NetworkSpec | None) -> None:
        self.dhcp.stop(network_id)
        if network is not None:
            for name in self._own_links(network):
                self.kernel.delete_link(name)
        else:  # not known any more: remove whatever its names would be
            for name in (self.names.vxlan(network_id), self.names.vlan(network_id),
                         self.names.bridge(network_id)):
                self.kernel.delete_link(name)
        self._apply_routes()
        self._apply_nat()
        self._apply_metadata()

    # --- endpoints ----------------------------------------------------------------------------

    def _apply_endpoint(self, endpoint: EndpointSpec) -> None:
        network = self.state.networks[endpoint.network_id]
        device = self.names.endpoint(endpoint.id)
        master = self.bridge_of(network)
        if endpoint.kind == "veth":
            self.kernel.ensure_veth(device, endpoint.netns, endpoint.ifname, peer_mac=endpoint.mac,
                                    master=master, mtu=network.mtu)
        else:
            self.kernel.ensure_tap(device, master=master, mtu=network.mtu)
        if network.network_type == "routed":
            if self.state.routed is None:
                raise exception.NetworkTypeUnsupported(
                    network_type="routed", reason=f"host {self.host} has no routed layout (gateway, block)")
            self.kernel.set_sysctl(f"net/ipv4/conf/{device}/proxy_arp", "1")
            # Answer at once: the default random delay (up to 0.8 s) stalls every first packet.
            self.kernel.set_sysctl(f"net/ipv4/neigh/{device}/proxy_delay", "0")
            # The device holds no address (a release before this one put the gateway's there).
            for cidr in self.kernel.addresses(device):
                self.kernel.remove_address(device, cidr)
            if endpoint.address:
                self.kernel.ensure_route(f"{endpoint.address}/32", dev=device)
            self._apply_routed_dhcp()
        if network.dhcp or network.ipv6_mode:
            self._apply_dhcp(network.id)
        self._apply_nat()
        if network.network_type == "routed":
            self._apply_metadata()
        elif endpoint.address and master is not None:
            # Neighbours that knew the address at another MAC (an address IPAM handed out again)
            # or behind another host (a guest that moved) learn where it is now, without waiting
            # for their entry to go stale. A routed endpoint's neighbours reach it through their
            # own host's gateway: they have nothing to relearn.
            self._announce(master, endpoint.address, endpoint.mac)

    def _remove_endpoint(self, endpoint_id: str, endpoint: EndpointSpec | None) -> None:
        # Deleting the device takes its /32 route and (for a veth) its peer with it.
        self.kernel.delete_link(self.names.endpoint(endpoint_id))
        if endpoint is not None:
            network = self.state.networks.get(endpoint.network_id)
            if endpoint.address and network is not None and network.network_type == "routed":
                self.kernel.delete_route(f"{endpoint.address}/32")
            if network is not None and (network.dhcp or network.ipv6_mode):
                self._apply_dhcp(network.id)
        self._apply_routed_dhcp()
        self._apply_nat()
        self._apply_metadata()

    # --- routed mode and topology -------------------------------------------------------------

    def _apply_topology(self) -> None:
        routed = self.state.routed
        if routed is not None:
            self.kernel.ensure_bridge(self.names.gateway)
            self.kernel.ensure_address(self.names.gateway, f"{routed.gateway}/32")
            self.kernel.set_sysctl("net/ipv4/ip_forward", "1")
        else:
            self.kernel.delete_link(self.names.gateway)
        present = {lk["name"] for lk in self.kernel.links(self.names.prefix)}
        for network in self.state.networks.values():
            device = self.names.vxlan(network.id)
            # A device not made yet gets its list when its network is applied.
            if network.network_type == "vxlan" and device in present:
                self._apply_flood_list(device)
        self._apply_routes()
        self._apply_routed_dhcp()

    def _wanted_routes(self, state: HostState | None = None) -> dict[str, tuple[str | None, str | None]]:
        """Destination -> (device, gateway) of every route fabric should hold for ``state``
        (default: the driver's)."""
        state = self.state if state is None else state
        wanted: dict[str, tuple[str | None, str | None]] = {}
        if state.routed is None:
            return wanted
        for host in state.remote_hosts.values():
            if host.block:
                wanted[host.block] = (None, host.tunnel_address)
        for endpoint in state.endpoints.values():
            network = state.networks.get(endpoint.network_id)
            if network is not None and network.network_type == "routed" and endpoint.address:
                wanted[f"{endpoint.address}/32"] = (self.names.endpoint(endpoint.id), None)
        return wanted

    def _apply_routes(self) -> None:
        links = {lk["name"] for lk in self.kernel.links(self.names.prefix)}
        # An endpoint whose device is not made yet gets its route when it is plugged.
        wanted = {dst: (dev, via) for dst, (dev, via) in self._wanted_routes().items()
                  if dev is None or dev in links}
        present = {r["dst"]: (r["dev"] if r["via"] is None else None, r["via"]) for r in self.kernel.routes()}
        for dst, (dev, via) in sorted(wanted.items()):
            if present.get(dst) != (dev, via):
                self.kernel.ensure_route(dst, dev=dev, via=via)
        for dst in sorted(set(present) - set(wanted)):
            self.kernel.delete_route(dst)

    # --- DHCP and NAT -------------------------------------------------------------------------

    def _apply_dhcp(self, network_id: str) -> None:
        entries = self.wanted_dhcp().get(network_id)
        if entries is None:
            self.dhcp.stop(network_id)
            return
        network = self.state.networks[network_id]
        ipv6 = (network.ipv6_address, network.ipv6_mode) if network.ipv6_mode else None
        self.dhcp.ensure(network_id, self.bridge_of(network), network.host_address if network.dhcp else None,
                         sorted(entries), router=self.gateway_of(network), ipv6=ipv6)

    def gateway_of(self, network: NetworkSpec, state: HostState | None = None) -> str | None:
        """The default gateway this host's DHCP server gives the network's guests: its own address on
        the network's bridge while it routes for them (a router realised here has a leg on the
        network, or a floating address here translates to one of them), else none (an isolated
        network). Each host answers only its own guests, so a guest routes through its own host."""
        state = self.state if state is None else state
        if network.network_type not in ("vxlan", "vlan") or not network.host_address:
            return None
        local = {e.address for e in state.endpoints_of(network.id) if e.address}
        if any(network.id in r.networks for r in state.routers.values()) or \
                any(f.fixed_address in local for f in state.floating.values()):
            return str(ipaddress.ip_interface(network.host_address).ip)
        return None

    def wanted_dhcp(self, state: HostState | None = None) -> dict[str, set[tuple[str, str]]]:
        """DHCP server name -> the (MAC, address) entries it serves for ``state`` (default: the
        driver's): each L2 network with DHCP or an IPv6 mode on, named by its id (an entry's
        address part as :func:`~fabric.network.dhcp.entry_text` writes it), and, while the host has
        addressed routed endpoints, :data:`ROUTED_DHCP` for all of them."""
        state = self.state if state is None else state
        wanted: dict[str, set[tuple[str, str]]] = {}
        routed: set[tuple[str, str]] = set()
        for network in state.networks.values():
            if network.network_type == "routed":
                routed |= {(e.mac.lower(), e.address) for e in state.endpoints_of(network.id) if e.address}
            elif (network.dhcp or network.ipv6_mode) and self.bridge_of(network) is not None:
                stateful = network.ipv6_mode == "dhcpv6-stateful"
                wanted[network.id] = {
                    (e.mac.lower(), entry_text(e.address if network.dhcp else None, e.address6 if stateful else None))
                    for e in state.endpoints_of(network.id)
                    if (network.dhcp and e.address) or (stateful and e.address6)}
        if routed and state.routed is not None:
            wanted[ROUTED_DHCP] = routed
        return wanted

    def _apply_routed_dhcp(self) -> None:
        """The routed server runs with exactly the host's routed entries (and stops without any)."""
        entries = self.wanted_dhcp().get(ROUTED_DHCP)
        routed = self.state.routed
        if not entries or routed is None:
            self.dhcp.stop(ROUTED_DHCP)
            return
        self.dhcp.ensure_routed(ROUTED_DHCP, self.names.gateway, self.names.endpoints, routed.gateway,
                                routed.block, sorted(entries))

    def _apply_floating(self) -> None:
        self._apply_nat()
        for network_id, network in sorted(self.state.networks.items()):
            if network.dhcp:  # its guests' gateway follows the routers and floating addresses here
                self._apply_dhcp(network_id)

    def _apply_nat(self, force: bool = False) -> None:
        if self.state.routers or self.state.floating:
            # A router forwards between bridges and out, a floating address to its endpoint; like
            # routed mode, it never turns this off (others may still need it).
            self.kernel.set_sysctl("net/ipv4/ip_forward", "1")
        ruleset = nat.build_ruleset(self.names, self.state)
        if force or ruleset != self._applied_ruleset:
            nat.apply(self.kernel, self.names, self.state)
            self._applied_ruleset = ruleset
        self._apply_edge()
        # Filtering follows every change of endpoints and networks that moves NAT.
        self._apply_security(force)

    def _apply_edge(self) -> None:
        """Each mapped external interface holds exactly fabric's wanted addresses (see
        :mod:`fabric.network.edge`); the administrator's own addresses there stay."""
        for interface, wanted in sorted(edge.wanted_addresses(self.external_interfaces, self.state).items()):
            try:
                if wanted:
                    # Removing an interface's primary address would take its secondaries with it.
                    self.kernel.set_sysctl(f"net/ipv4/conf/{interface}/promote_secondaries", "1")
                present = set(self.kernel.addresses(interface, fabric_only=True))
                for cidr in sorted(wanted - present):
                    self.kernel.ensure_address(interface, cidr, marked=True)
                    # The outside may still hold the address at another host's MAC (it moved here).
                    self._announce(interface, cidr.split("/")[0])
                for cidr in sorted(present - wanted):
                    self.kernel.remove_address(interface, cidr)
            except exception.KernelError as exc:
                # NAT still works for an outside that routes to this host: never fail the rest for it.
                LOG.error("external interface %s on %s: %s", interface, self.host, exc.message)

    def _announce(self, device: str, address: str, mac: str | None = None) -> None:
        """Gratuitous ARP for ``address`` at ``mac`` (default: ``device``'s) on ``device``; a failure
        is logged, never raised: the address still works once neighbours' entries expire."""
        try:
            self.kernel.announce(device, address, mac)
        except exception.KernelError as exc:
            LOG.warning("cannot announce %s on %s (%s): %s", address, device, self.host, exc.message)

    def edge_addresses(self) -> dict[str, list[str]]:
        """Mapped external interface -> the addresses fabric holds on it."""
        return {interface: sorted(self.kernel.addresses(interface, fabric_only=True))
                for interface in sorted(set(self.external_interfaces.values()))}

    def _apply_security(self, force: bool = False) -> None:
        wanted = secgroups.plan(self.names, self.state, self.security)
        applied = self._applied_security
        if not force and applied == wanted:
            return
        script = None if force or applied is None else secgroups.update(self.names, applied, wanted)
        self.kernel.execute(["nft", "-f", "-"], stdin=wanted.full if script is None else script)
        self._applied_security = wanted

    def _apply_members(self, changes: dict[str, secgroups.MemberChange]) -> None:
        applied = self._applied_security
        if applied is None:
            self._apply_security()
            return
        script, sets = secgroups.member_update(self.names, applied, changes)
        if script:
            try:
                self.kernel.execute(["nft", "-f", "-"], stdin=script)
            except exception.KernelError as exc:
                # The kernel's sets are not what was applied (someone changed them): rebuild them.
                LOG.warning("security sets on %s: %s; rebuilding the security tables", self.host, exc.message)
                self._apply_security(force=True)
                return
        applied.sets.update(sets)

    def security_rules(self) -> str:
        """fabric's security tables as nft lists them (empty when absent): a snapshot to compare."""
        listed = []
        for family in ("inet", "bridge"):
            done = self.kernel.execute(["nft", "list", "table", family, secgroups.table_name(self.names)],
                                       check=False)
            listed.append(done.stdout if done.returncode == 0 else "")
        return "".join(listed)

    # --- metadata ----------------------------------------------------------------------------

    def serve_metadata(self, db: Any) -> None:
        if self.metadata is not None:  # called again (a second init_host): one server, not two
            self.metadata.stop()
        self.metadata = MetadataServer.from_database(db, self.netns, self.settings.metadata.client_timeout)
        self.kernel.set_up("lo")
        self._apply_metadata()

    def _metadata_devices(self) -> dict[str, tuple[str, ...]]:
        """Device -> networks whose guests' requests arrive on it."""
        devices: dict[str, list[str]] = {}
        for network in sorted(self.state.networks.values(), key=lambda n: n.id):
            bridge = self.bridge_of(network)
            if bridge is not None:
                devices.setdefault(bridge, []).append(network.id)
        for endpoint in self.state.endpoints.values():
            network = self.state.networks.get(endpoint.network_id)
            # A routed network has no bridge: each guest's packets arrive on its own device.
            if network is not None and network.network_type == "routed":
                devices.setdefault(self.names.endpoint(endpoint.id), []).append(network.id)
        return {device: tuple(networks) for device, networks in devices.items()}

    def _apply_metadata(self) -> None:
        if self.metadata is None:
            return
        try:
            self.kernel.ensure_address("lo", f"{METADATA_ADDRESS}/32")  # in case it was removed under us
            self.metadata.serve_exactly(self._metadata_devices())
        except exception.KernelError as exc:
            # A guest without metadata still has its network: never fail a plug for it.
            LOG.error("metadata: cannot serve on %s: %s", self.host, exc.message)

    # --- reconcile ------------------------------------------------------------------------------

    def _sync(self) -> dict[str, Any]:
        removed = []
        wanted = self._wanted_links()
        # Endpoints first, then tunnels, then bridges: a bridge goes after its ports.
        order = {"t": 0, "x": 1, "v": 1, "b": 2, "g": 3}
        ours = [lk["name"] for lk in self.kernel.links(self.names.prefix) if self.names.owns(lk["name"])]
        for name in sorted(ours, key=lambda n: order.get(n[len(self.names.prefix)], 9)):
            if name not in wanted and self.kernel.delete_link(name):
                removed.append(name)
        wanted_dhcp = self.wanted_dhcp()
        for server in self.dhcp.networks():
            if server not in wanted_dhcp:
                self.dhcp.stop(server)
                removed.append(f"dhcp:{server}")
        present = {lk["name"] for lk in self.kernel.links(self.names.prefix)}
        self._apply_topology()
        for network in self.state.networks.values():
            self._apply_network(network)
        for endpoint in self.state.endpoints.values():
            self._apply_endpoint(endpoint)
        self._apply_routes()
        self._apply_nat(force=True)
        self._apply_metadata()
        created = sorted(wanted - present)
        return {"created": created, "removed": removed}

    # --- describe and stop ------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        links = {lk["name"]: lk for lk in self.kernel.links(self.names.prefix) if self.names.owns(lk["name"])}
        networks = {}
        for network in self.state.networks.values():
            entry: dict[str, Any] = {"type": network.network_type, "bridge": self.bridge_of(network),
                                     "endpoints": sorted(e.id for e in self.state.endpoints_of(network.id)),
                                     "dhcp_pid": self.dhcp.pid(ROUTED_DHCP if network.network_type == "routed"
                                                               else network.id)}
            if network.network_type == "vxlan":
                entry["flood_to"] = sorted(self.kernel.flood_destinations(self.names.vxlan(network.id)))
            networks[network.id] = entry
        return {
            "host": self.host,
            "driver": "linux",
            "netns": self.netns,
            "links": sorted(links),
            "networks": networks,
            "endpoints": {e.id: self.names.endpoint(e.id) for e in self.state.endpoints.values()},
            "remote_hosts": sorted(self.state.remote_hosts),
            "routes": {r["dst"]: r["via"] or r["dev"] for r in self.kernel.routes()},
            "nat_rules": nat.rules(self.kernel, self.names),
            "edge_addresses": self.edge_addresses(),
            "filtered_endpoints": sorted(e for e in self.security.ports if e in self.state.endpoints),
            "metadata": self.metadata.listening() if self.metadata is not None else None,
        }

    def stop(self) -> None:
        """Stop this host's DHCP servers and metadata listeners; bridges, devices, routes and rules stay."""
        self.dhcp.stop_all()
        if self.metadata is not None:
            self.metadata.stop()

    def remove_all(self) -> None:
        """Remove every kernel object and process fabric made on this host (decommission)."""
        self.state = type(self.state)()
        self._sync()
        self.dhcp.stop_all()
        nat.remove(self.kernel, self.names)
        self._applied_ruleset = None
        self.kernel.execute(["nft", "-f", "-"], stdin=secgroups.removal(self.names))
        self._applied_security = None
        if self.metadata is not None:
            self.metadata.stop()
            self.kernel.remove_address("lo", f"{METADATA_ADDRESS}/32")
