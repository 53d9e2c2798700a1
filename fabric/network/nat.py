"""fabric's nftables table: floating-address NAT and tenant isolation.

The whole table is rebuilt from the desired state in one ``nft -f`` transaction
(declare, delete, recreate), so applying the same state twice leaves exactly
the same rules, and a failure leaves the previous rules in place. Nothing
outside fabric's own table (``ip <prefix>fabric``) is ever read or changed.
"""

from __future__ import annotations

import ipaddress
import json

from fabric.network.kernel import Kernel
from fabric.network.model import HostState
from fabric.network.naming import Names


def _routed_isolation_rules(state: HostState) -> list[str]:
    """Drop forwarded traffic between different routed networks of the datacenter.

    One rule per routed network with an endpoint here: traffic to it from a
    datacenter address outside it is dropped. Filtering where the destination
    lives covers both same-host and cross-host paths.
    """
    if state.routed is None:
        return []
    datacenter = ipaddress.IPv4Network(state.routed.datacenter)
    local = {e.network_id for e in state.endpoints.values()}
    rules = []
    for network in sorted(state.networks.values(), key=lambda n: n.id):
        if network.network_type != "routed" or network.id not in local or not network.match_mask:
            continue
        mask, value = network.match_mask, network.match_value or "0.0.0.0"
        rules.append(f"ip saddr {datacenter} ip daddr & {mask} == {value} "
                     f"ip saddr & {mask} != {value} drop")
    return rules


def _router_rules(names: Names, state: HostState) -> tuple[list[str], list[str]]:
    """(forward accepts, SNAT rules) of the routers this host realises.

    A router joins its networks: forwarding between their bridges is accepted before the
    isolation drops below. Its subnets' traffic leaving fabric's devices takes the router's
    gateway address (after the floating addresses' own SNAT, which wins as in Neutron).
    """
    ours = f'"{names.prefix}*"'
    accept, snat = [], []
    for router in sorted(state.routers.values(), key=lambda r: r.id):
        legs = sorted(n for n in set(router.networks) if n in state.networks)
        accept += [f'iifname "{names.bridge(a)}" oifname "{names.bridge(b)}" accept'
                   for a in legs for b in legs if a != b]
        if router.snat_address:
            snat += [f"ip saddr {cidr} oifname != {ours} snat to {router.snat_address}"
                     for cidr in sorted(router.subnets)]
    return accept, snat


def build_ruleset(names: Names, state: HostState) -> str:
    """The nft script that makes fabric's table match ``state`` (deterministic)."""
    table = f"ip {names.table}"
    ours = f'"{names.prefix}*"'
    dnat, snat = [], []
    for floating in sorted(state.floating.values(), key=lambda f: f.address):
        dnat.append(f"ip daddr {floating.address} dnat to {floating.fixed_address}")
        # Only traffic leaving fabric's own devices is translated: endpoint to
        # endpoint traffic keeps its fixed source.
        snat.append(f"ip saddr {floating.fixed_address} oifname != {ours} snat to {floating.address}")
    router_accepts, router_snat = _router_rules(names, state)
    snat += router_snat
    # Routed traffic between two of fabric's bridges crosses networks: drop it (unless a
    # router joins them: accepted first). The per-bridge form leaves bridged frames alone,
    # which br_netfilter shows to this hook with the same bridge as input and output.
    forward = router_accepts + [
        f'iifname "{names.bridge(n.id)}" oifname "{names.prefix}b*" oifname != "{names.bridge(n.id)}" drop'
        for n in sorted(state.networks.values(), key=lambda n: n.id) if n.network_type in ("vxlan", "vlan")]
    forward += _routed_isolation_rules(state)

    def chain(name: str, hook: str, kind: str, priority: str, rules: list[str]) -> list[str]:
        return [f"  chain {name} {{",
                f"    type {kind} hook {hook} priority {priority}; policy accept;",
                *(f"    {rule}" for rule in rules), "  }"]

    lines = [f"table {table}", f"delete table {table}", f"table {table} {{"]
    lines += chain("prerouting", "prerouting", "nat", "dstnat", dnat)
    lines += chain("output", "output", "nat", "-100", dnat)
    lines += chain("postrouting", "postrouting", "nat", "srcnat", snat)
    lines += chain("forward", "forward", "filter", "filter", forward)
    lines.append("}")
    return "\n".join(lines) + "\n"


def apply(kernel: Kernel, names: Names, state: HostState) -> None:
    """Make fabric's table match ``state``. Raises KernelError with nft's message."""
    kernel.execute(["nft", "-f", "-"], stdin=build_ruleset(names, state))


def remove(kernel: Kernel, names: Names) -> None:
    """Delete fabric's table (no error when it is absent)."""
    table = f"ip {names.table}"
    kernel.execute(["nft", "-f", "-"], stdin=f"table {table}\ndelete table {table}\n")


def rules(kernel: Kernel, names: Names) -> list[str]:
    """The rules in fabric's table as nft prints them, one per entry (empty when absent)."""
    done = kernel.execute(["nft", "-j", "list", "table", "ip", names.table], check=False)
    if done.returncode != 0:
        return []
    found = []
    for item in json.loads(done.stdout).get("nftables", []):
        rule = item.get("rule")
        if rule is not None:
            found.append(f"{rule['chain']}: {json.dumps(rule['expr'], sort_keys=True)}")
    return found
