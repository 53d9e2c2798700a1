"""Subnet pools' prefix arithmetic, pure: the one home of the rules for a pool's prefixes
and for carving subnets out of them (the Network API runs it in-process, as it runs
:func:`fabric.ipam.pools.validate_subnet`).

A pool is a list of prefixes of one IP version with a default, a minimum and a maximum
prefix length; a subnet carved from it is a block of a permitted length inside one of
the prefixes, overlapping no subnet carved before. Every refusal is an Invalid (or, for
a full pool, a Conflict) naming the value and what would be accepted.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable

from fabric import exception

Net = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclasses.dataclass(frozen=True)
class PoolSpec:
    """A checked pool: prefixes collapsed and sorted, lengths within the family's width."""

    ip_version: int
    prefixes: list[str]
    default_prefixlen: int
    min_prefixlen: int
    max_prefixlen: int


def _network(text: str, what: str) -> Net:
    try:
        return ipaddress.ip_network(str(text).strip(), strict=True)
    except ValueError as err:
        raise exception.Invalid(reason=f"{what} {text!r} is not a network in CIDR notation with no host bits "
                                       f"set (e.g. 10.40.0.0/16): {err}") from None


def validate_pool(prefixes: Iterable[str], default_prefixlen: int | None, min_prefixlen: int | None,
                  max_prefixlen: int | None) -> PoolSpec:
    """The pool these values describe; Invalid naming the first bad one.

    Lengths default as Neutron's do: the minimum to the shortest prefix, the maximum
    to the family's width, the default to the minimum.
    """
    nets = [_network(p, "subnetpool.prefixes entry") for p in prefixes]
    if not nets:
        raise exception.Invalid(reason="subnetpool.prefixes is empty; give at least one prefix (--pool-prefix)")
    versions = {n.version for n in nets}
    if len(versions) > 1:
        raise exception.Invalid(reason=f"subnetpool.prefixes {[str(n) for n in nets]} mix IPv4 and IPv6; a pool "
                                       "holds one family")
    version = versions.pop()
    width = 32 if version == 4 else 128
    collapsed = sorted(ipaddress.collapse_addresses(nets))  # type: ignore[type-var]
    shortest = min(n.prefixlen for n in collapsed)
    low = shortest if min_prefixlen is None else min_prefixlen
    high = width if max_prefixlen is None else max_prefixlen
    default = low if default_prefixlen is None else default_prefixlen
    for name, value in (("min_prefixlen", low), ("max_prefixlen", high), ("default_prefixlen", default)):
        if not 0 <= value <= width:
            raise exception.Invalid(reason=f"subnetpool.{name} {value} is outside 0-{width} (IPv{version})")
    if low < shortest:
        raise exception.Invalid(reason=f"subnetpool.min_prefixlen {low} is shorter than the pool's shortest prefix "
                                       f"/{shortest}; accepted: {shortest}-{high}")
    if not low <= default <= high:
        raise exception.Invalid(reason=f"subnetpool.default_prefixlen {default} is outside min_prefixlen {low} to "
                                       f"max_prefixlen {high}")
    return PoolSpec(version, [str(n) for n in collapsed], default, low, high)


def _check_length(pool: PoolSpec, prefixlen: int) -> None:
    if not pool.min_prefixlen <= prefixlen <= pool.max_prefixlen:
        raise exception.Invalid(reason=f"subnet.prefixlen {prefixlen} is outside the subnet pool's "
                                       f"{pool.min_prefixlen}-{pool.max_prefixlen}")


def check_requested(pool: PoolSpec, cidr: str, used: Iterable[str]) -> str:
    """``cidr`` as a subnet of the pool: inside one of its prefixes, of a permitted length,
    overlapping none of ``used``; Invalid or Conflict naming why not."""
    net = _network(cidr, "subnet.cidr")
    if net.version != pool.ip_version:
        raise exception.Invalid(reason=f"subnet.cidr {net} is not IPv{pool.ip_version}, the subnet pool's family")
    _check_length(pool, net.prefixlen)
    if not any(net.subnet_of(ipaddress.ip_network(p)) for p in pool.prefixes):  # type: ignore[arg-type]
        raise exception.Invalid(reason=f"subnet.cidr {net} is not inside the subnet pool's prefixes "
                                       f"{', '.join(pool.prefixes)}")
    for other in used:
        if net.overlaps(ipaddress.ip_network(other)):  # type: ignore[arg-type]
            raise exception.Conflict(reason=f"subnet.cidr {net} overlaps {other}, already carved from the subnet pool")
    return str(net)


def carve(pool: PoolSpec, prefixlen: int | None, used: Iterable[str]) -> str:
    """The lowest block of ``prefixlen`` (default: the pool's) inside the pool's prefixes that
    overlaps none of ``used``; Conflict when the pool has no such block left."""
    length = pool.default_prefixlen if prefixlen is None else prefixlen
    _check_length(pool, length)
    taken = sorted(ipaddress.ip_network(u) for u in used)  # type: ignore[type-var]
    for text in pool.prefixes:
        prefix = ipaddress.ip_network(text)
        if length < prefix.prefixlen:
            continue
        family = type(prefix)  # ints alone would make low IPv6 blocks IPv4
        candidate = family((int(prefix.network_address), length))
        step = candidate.num_addresses
        while candidate.subnet_of(prefix):  # type: ignore[arg-type]
            clash = next((t for t in taken if t.overlaps(candidate)), None)
            if clash is None:
                return str(candidate)
            # Skip past the clash (aligned to the block size): never probe inside a taken range.
            end = int(clash.broadcast_address) + 1
            start = max(int(candidate.network_address) + step, -(-end // step) * step)
            if start + step - 1 > int(prefix.broadcast_address):
                break
            candidate = family((start, length))
    raise exception.Conflict(reason=f"the subnet pool ({', '.join(pool.prefixes)}) has no free /{length} left")
