"""Networks: one host's data plane against what the database says it should hold.

What should exist comes from one place: :func:`fabric.network.dbstate.host_state`
(the state the network worker converges to on start), and, for the kernel, the
linux driver's own notion of the links and routes that state needs
(``_wanted_links``/``_wanted_routes``/``wanted_dhcp``), the DHCP entries it serves
(:meth:`DhcpServers.ensure`'s hosts file) and the nftables table
:func:`fabric.network.nat.build_ruleset` writes. Two layers are compared:

- the worker's bookkeeping (``driver.state``: what it was asked to hold, which is all
  the fake driver has) against the database: networks, endpoints, floating addresses
  and remote hosts missing (stale), extra (orphan) or different (unsynced);
- the kernel (linux driver only): fabric's links (bridges, VXLAN/VLAN devices, taps,
  the gateway), fabric's routes, each DHCP server and its hosts entries, and the
  number of rules in each chain of fabric's nftables table.

Fixes go through the network worker's own handlers, one at a time with its other
work (the manager's semaphore): for stale and unsynced findings the database's state
is applied again as the handlers apply it (``set_routed`` and the remote hosts as
``host_joined`` does, each network the host carries (it has a port there) as the
first ``plug`` on it does: bridge, tunnel, DHCP, NAT; each endpoint as ``plug`` does); orphans are removed by the worker's
converge (``driver.sync``, what it runs on start), the one place that knows how to
take fabric's leftovers down. Two consequences of going through these paths: a
re-applied object is written whole (a DHCP hosts file, the nftables table, the
route set), so extras inside it go with the repair; and the converge also applies
again what is missing. A finding is marked fixed when the report run after the
repair no longer has it.
"""

from __future__ import annotations

import collections
import logging
import re
from typing import Any

from fabric.network import nat
from fabric.network.drivers.base import NetworkDriver
from fabric.network.drivers.linux import LinuxDriver
from fabric.network.model import HostState
from fabric.reconcile import ORPHAN, STALE, UNSYNCED, Finding, Fixes

LOG = logging.getLogger(__name__)

#: The kind of object a fabric link is, by the letter after the prefix (see fabric.network.naming).
_LINK_KINDS = {"t": "tap", "x": "vxlan", "v": "vlan", "b": "bridge", "g": "gateway"}
_CHAIN = re.compile(r"^\s*chain (\S+) \{$")


def find(driver: NetworkDriver, state: HostState) -> list[Finding]:
    """Every network finding on the driver's host for the desired ``state`` (changes nothing)."""
    findings = _bookkeeping(driver, state)
    if isinstance(driver, LinuxDriver):
        findings += _kernel(driver, state)
    for finding in findings:
        finding.host = driver.host
    return findings


# --- the worker's bookkeeping -----------------------------------------------------------------------

def _compare(what: str, wanted: dict[str, Any], held: dict[str, Any]) -> list[Finding]:
    found = []
    for ident in sorted(set(wanted) - set(held)):
        found.append(Finding(STALE, what, ident, "in the database, not held by the network worker"))
    for ident in sorted(set(held) - set(wanted)):
        found.append(Finding(ORPHAN, what, ident, "held by the network worker, not in the database"))
    for ident in sorted(set(wanted) & set(held)):
        if wanted[ident] != held[ident]:
            found.append(Finding(UNSYNCED, what, ident, f"database {wanted[ident]}, worker {held[ident]}"))
    return found


def _bookkeeping(driver: NetworkDriver, state: HostState) -> list[Finding]:
    held = driver.state
    remote = {n: h for n, h in state.remote_hosts.items() if driver._is_remote(h)}
    found = _compare("network", state.networks, held.networks)
    found += _compare("endpoint", state.endpoints, held.endpoints)
    found += _compare("floating", state.floating, held.floating)
    found += _compare("remote-host", remote, held.remote_hosts)
    if state.routed != held.routed:
        found.append(Finding(UNSYNCED, "routed-layout", driver.host,
                             f"database {state.routed}, worker {held.routed}"))
    return found


# --- the kernel (linux driver) ----------------------------------------------------------------------

def _link_kind(driver: LinuxDriver, name: str) -> str:
    return _LINK_KINDS.get(name[len(driver.names.prefix):][:1], "link")


def _kernel(driver: LinuxDriver, state: HostState) -> list[Finding]:
    found = []
    wanted_links = driver._wanted_links(state)
    present = {lk["name"]: lk for lk in driver.kernel.links(driver.names.prefix) if driver.names.owns(lk["name"])}
    links = set(present)
    for name in sorted(wanted_links - links):
        found.append(Finding(STALE, _link_kind(driver, name), name, "missing from the kernel"))
    for name in sorted(links - wanted_links):
        found.append(Finding(ORPHAN, _link_kind(driver, name), name, "in the kernel for no database object"))
    for name, master in sorted(_wanted_masters(driver, state).items()):
        link = present.get(name)
        if link is not None and link.get("master") != master:
            found.append(Finding(UNSYNCED, _link_kind(driver, name), name,
                                 f"attached to {link.get('master') or 'nothing'}, wanted {master}"))
    for network in state.networks.values():
        bridge = driver.bridge_of(network)
        if network.network_type == "flat" and driver.kernel.link(bridge) is None:
            found.append(Finding(STALE, "bridge", bridge, f"flat network {network.id}'s bridge is missing"))
    found += _routes(driver, state)
    found += _dhcp(driver, state)
    found += _nft(driver, state)
    return found


def _wanted_masters(driver: LinuxDriver, state: HostState) -> dict[str, str]:
    """Link -> the bridge it should be attached to (endpoints' devices and tunnels of L2 networks)."""
    masters = {}
    for network in state.networks.values():
        bridge = driver.bridge_of(network)
        if bridge is None:
            continue
        for link in driver._own_links(network):
            if link != bridge:
                masters[link] = bridge
        for endpoint in state.endpoints_of(network.id):
            masters[driver.names.endpoint(endpoint.id)] = bridge
    return masters


def _routes(driver: LinuxDriver, state: HostState) -> list[Finding]:
    wanted = driver._wanted_routes(state)
    present = {r["dst"]: (r["dev"] if r["via"] is None else None, r["via"]) for r in driver.kernel.routes()}
    found = []
    for dst in sorted(set(wanted) - set(present)):
        found.append(Finding(STALE, "route", dst, f"missing (wanted via {wanted[dst][1] or wanted[dst][0]})"))
    for dst in sorted(set(present) - set(wanted)):
        found.append(Finding(ORPHAN, "route", dst, f"via {present[dst][1] or present[dst][0]} for no database object"))
    for dst in sorted(set(wanted) & set(present)):
        if wanted[dst] != present[dst]:
            found.append(Finding(UNSYNCED, "route", dst, f"via {present[dst][1] or present[dst][0]}, "
                                                         f"wanted {wanted[dst][1] or wanted[dst][0]}"))
    return found


def _dhcp(driver: LinuxDriver, state: HostState) -> list[Finding]:
    found = []
    wanted = driver.wanted_dhcp(state)
    for server in sorted(wanted):
        if driver.dhcp.pid(server) is None:
            found.append(Finding(STALE, "dhcp-server", server, "no dnsmasq running"))
        entries = driver.dhcp.entries(server)
        by_mac = dict(entries)
        for mac, address in sorted(wanted[server] - entries):
            if mac in by_mac:
                found.append(Finding(UNSYNCED, "dhcp-entry", f"{server}/{mac}", f"serves {by_mac[mac]}, "
                                                                                f"wanted {address}"))
            else:
                found.append(Finding(STALE, "dhcp-entry", f"{server}/{mac}", f"{address} missing from the hosts file"))
        wanted_macs = {mac for mac, _ in wanted[server]}
        for mac, address in sorted(entries):
            if mac not in wanted_macs:
                found.append(Finding(ORPHAN, "dhcp-entry", f"{server}/{mac}", f"serves {address} for no port"))
    for server in driver.dhcp.networks():
        if server not in wanted:
            found.append(Finding(ORPHAN, "dhcp-server", server, "a DHCP server for no database object"))
    return found


def _rule_counts(script: str) -> dict[str, int]:
    """Chain -> number of rules in an nft script written by :func:`nat.build_ruleset`."""
    counts: dict[str, int] = {}
    chain = None
    for line in script.splitlines():
        match = _CHAIN.match(line)
        if match:
            chain = match[1]
            counts[chain] = 0
        elif line.strip() == "}":
            chain = None
        elif chain is not None and not line.strip().startswith("type "):
            counts[chain] += 1
    return counts


def _nft(driver: LinuxDriver, state: HostState) -> list[Finding]:
    table = f"ip {driver.names.table}"
    wanted = _rule_counts(nat.build_ruleset(driver.names, state))
    listed = driver.kernel.execute(["nft", "list", "table", "ip", driver.names.table], check=False)
    if listed.returncode != 0:
        return [Finding(STALE, "nft-table", table, "fabric's nftables table is missing")]
    present = collections.Counter(rule.split(":", 1)[0] for rule in nat.rules(driver.kernel, driver.names))
    found = []
    for chain in sorted(set(wanted) | set(present)):
        have, want = present.get(chain, 0), wanted.get(chain, 0)
        if have < want:
            found.append(Finding(STALE, "nft-rule", f"{table} {chain}", f"{want - have} of {want} rule(s) missing"))
        elif have > want:
            found.append(Finding(ORPHAN, "nft-rule", f"{table} {chain}", f"{have - want} rule(s) more than the "
                                                                        f"{want} wanted"))
    return found


# --- fixes ---------------------------------------------------------------------------------------------

def fix(driver: NetworkDriver, state: HostState, findings: list[Finding], fixes: Fixes) -> None:
    """Repair the findings of the kinds ``fixes`` names through the driver's own handlers
    (see the module docstring), marking each ``fixed`` or with its ``error``. The caller
    holds the network worker's one-at-a-time lock."""
    chosen = [f for f in findings if fixes.wants(f.kind)]
    if not chosen:
        return
    try:
        if any(f.kind in (STALE, UNSYNCED) for f in chosen):
            _apply_again(driver, state)
        if any(f.kind == ORPHAN for f in chosen):
            driver.sync(state)
    except Exception as exc:  # noqa: BLE001 - reported on the findings, the next report shows what is left
        LOG.warning("reconcile: repairing networks on %s failed: %s", driver.host, exc)
        for finding in chosen:
            finding.error = f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"
        return
    left = {(f.kind, f.what, f.ident) for f in find(driver, state)}
    for finding in chosen:
        finding.fixed = (finding.kind, finding.what, finding.ident) not in left
        if not finding.fixed:
            finding.error = "still there after the repair"


def _apply_again(driver: NetworkDriver, state: HostState) -> None:
    """Everything ``state`` holds, applied again as the handlers apply it; adds, removes nothing."""
    driver.set_routed(state.routed)
    driver.set_remote_hosts(list(state.remote_hosts.values()))
    for network in state.networks.values():
        driver.setup_network(network)
    for endpoint in state.endpoints.values():
        driver.plug(endpoint)
    for floating in state.floating.values():
        driver.associate_floating(floating)
    if isinstance(driver, LinuxDriver):
        # The driver skips a table it believes applied; a rule removed behind its back needs it written.
        nat.apply(driver.kernel, driver.names, driver.state)
