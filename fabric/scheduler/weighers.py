"""Weighers: which of the hosts that passed the filters comes first.

RAM and vCPU weighers normalise free capacity over the candidate hosts to
0..1; with ``spread`` the emptiest host wins, otherwise (stack) the fullest
host that still fits. The failed-build weigher takes a fixed penalty per
recent failed build, so one bad host stops attracting every retry.
"""

from __future__ import annotations

import datetime
import random
from typing import ClassVar

from fabric import exception
from fabric.config import SchedulerSection
from fabric.db.types import utcnow
from fabric.scheduler.host_state import HostState
from fabric.scheduler.request import SOFT_AFFINITY, SOFT_ANTI_AFFINITY, RequestSpec


class Weigher:
    """Gives each host a raw value; normalised weighers are rescaled to 0..1 over the candidates."""

    name: ClassVar[str] = ""
    normalise: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = cls.__name__

    def __init__(self, settings: SchedulerSection) -> None:
        self.multiplier = 1.0 if settings.spread else -1.0

    def start(self) -> None:
        """Called once per decision, before any host is weighed."""

    def raw_weight(self, host: HostState, spec: RequestSpec) -> float:
        raise NotImplementedError

    def raw_weights(self, hosts: list[HostState], spec: RequestSpec) -> list[float] | None:
        """Each host's raw value, in order; None when every host's is 0 (this weigher orders nothing)."""
        return [self.raw_weight(host, spec) for host in hosts]


class RamWeigher(Weigher):
    """Free RAM (under the allocation ratio)."""

    def raw_weight(self, host: HostState, spec: RequestSpec) -> float:
        return host.free_ram_mb

    def raw_weights(self, hosts: list[HostState], spec: RequestSpec) -> list[float]:
        # Inlined: this runs over every candidate on every decision.
        return [h.free_ram_mb for h in hosts]


class CoreWeigher(Weigher):
    """Free vCPUs (under the allocation ratio)."""

    def raw_weight(self, host: HostState, spec: RequestSpec) -> float:
        return host.free_vcpus

    def raw_weights(self, hosts: list[HostState], spec: RequestSpec) -> list[float]:
        return [h.free_vcpus for h in hosts]


class FailedBuildWeigher(Weigher):
    """Minus ``failed_build_penalty`` per failed build, while the last failure is recent."""

    normalise = False

    def __init__(self, settings: SchedulerSection) -> None:
        self.multiplier = settings.failed_build_penalty
        self.window = datetime.timedelta(seconds=settings.failed_build_window)
        self._now = utcnow()

    def start(self) -> None:
        """Fix "now" once per decision rather than once per host."""
        self._now = utcnow()

    def raw_weight(self, host: HostState, spec: RequestSpec) -> float:
        last = host.last_build_failure_at
        if not host.failed_builds or last is None or self._now - last > self.window:
            return 0.0
        return -float(host.failed_builds)

    def raw_weights(self, hosts: list[HostState], spec: RequestSpec) -> list[float] | None:
        # Almost every host has no failed build: look for one first, cheaply.
        if not any([h.failed_builds for h in hosts]):
            return None
        raw_weight = self.raw_weight
        return [raw_weight(h, spec) if h.failed_builds else 0.0 for h in hosts]


class ServerGroupSoftWeigher(Weigher):
    """Soft-affinity: +1 for a host holding a member of the server's group; soft-anti-affinity:
    -1. Not normalised and multiplied by 10, so it outweighs the RAM and vCPU weighers (0..1
    each) whenever a fitting host can honour the policy, and only then."""

    normalise = False

    def __init__(self, settings: SchedulerSection) -> None:
        self.multiplier = 10.0

    def raw_weights(self, hosts: list[HostState], spec: RequestSpec) -> list[float] | None:
        sign = {SOFT_AFFINITY: 1.0, SOFT_ANTI_AFFINITY: -1.0}.get(spec.group_policy or "")
        if sign is None or not spec.group_hosts:
            return None
        held = spec.group_hosts
        return [sign if h.host in held else 0.0 for h in hosts]

    def raw_weight(self, host: HostState, spec: RequestSpec) -> float:
        return (self.raw_weights([host], spec) or [0.0])[0]


#: Every weigher fabric has, by the name the settings use.
WEIGHERS: dict[str, type[Weigher]] = {cls.name: cls for cls in (RamWeigher, CoreWeigher, FailedBuildWeigher,
                                                                ServerGroupSoftWeigher)}


def load_weighers(settings: SchedulerSection) -> list[Weigher]:
    """Instantiate ``settings.weighers``; raises InvalidSetting on an unknown name."""
    chosen = []
    for name in (n.strip() for n in settings.weighers.split(",")):
        if not name:
            continue
        if name not in WEIGHERS:
            raise exception.InvalidSetting(source="settings", section="scheduler", option="weighers",
                                           value=name, reason=f"unknown weigher; known: {', '.join(WEIGHERS)}")
        chosen.append(WEIGHERS[name](settings))
    return chosen


#: Scale of the tie-break added to each weight: far below any real difference in weight.
_TIEBREAK_SCALE = 1e-9


def weigh_hosts(weighers: list[Weigher], hosts: list[HostState], spec: RequestSpec,
                *, rng: random.Random | None = None,
                limit: int | None = None) -> list[tuple[float, HostState]]:
    """Hosts with their total weight, best first (the best ``limit`` only, if given).

    Equal weights come in random order (``rng``, or each host's random
    ``tiebreak``): that keeps concurrent schedulers from all choosing the
    same one of many equally good hosts.
    """
    # Each weigher adds multiplier * raw + offset to a host's weight. The offsets, and the
    # weighers that weigh every host alike, add the same to every host: they order nothing,
    # so they are summed apart, once, and added to the weights of the hosts returned only.
    # (This runs over every candidate on every decision: each pass over 1,000 hosts saved
    # is ~50 us of a decision.)
    terms: list[tuple[float, list[float]]] = []
    sources: list[type[Weigher]] = []  # the weigher of each term
    constant = 0.0
    for weigher in weighers:
        weigher.start()
        raw = weigher.raw_weights(hosts, spec)
        if not raw:
            continue
        multiplier = weigher.multiplier
        low, high = min(raw), max(raw)
        if high == low:
            if not weigher.normalise:
                constant += multiplier * low
            continue  # a normalised weigher gives every host 0 then
        if weigher.normalise:
            multiplier /= high - low
            constant -= low * multiplier
        terms.append((multiplier, raw))
        sources.append(type(weigher))
    # The sort keys carry the tie-break: kept apart from the weight, which is reported.
    if rng is None and len(terms) == 2:
        # The default weighers (RAM and vCPU), in one pass instead of three, summed in the
        # order of the loop below (the same floats). Each host's tie-break is drawn once per
        # process: different scheduler processes order equal hosts differently.
        (first, first_raw), (second, second_raw) = terms
        scale = _TIEBREAK_SCALE
        if sources == [RamWeigher, CoreWeigher]:
            # Their raw values read again from the hosts: cheaper than zipping three lists.
            keys = [second * h.free_vcpus + (first * h.free_ram_mb + h.tiebreak * scale) for h in hosts]
        else:
            keys = [second * b + (first * a + host.tiebreak * scale)
                    for a, b, host in zip(first_raw, second_raw, hosts, strict=True)]
    else:
        if rng is not None:
            keys = [rng.random() * _TIEBREAK_SCALE for _host in hosts]
        else:
            keys = [host.tiebreak * _TIEBREAK_SCALE for host in hosts]
        for multiplier, raw in terms:
            keys = [multiplier * value + key for key, value in zip(keys, raw, strict=True)]
    if limit == 1 and hosts:
        best = [keys.index(max(keys))]
    elif limit is not None and limit < len(hosts):
        # Sorting the floats alone (in C) then picking those at or above the limit's key
        # is cheaper than heapq.nlargest's Python loop over every host.
        lowest = sorted(keys)[-limit] if limit > 0 else float("inf")
        best = [index for index, key in enumerate(keys) if key >= lowest]
        best.sort(key=keys.__getitem__, reverse=True)
        del best[limit:]
    else:
        best = sorted(range(len(hosts)), key=keys.__getitem__, reverse=True)

    def weight(index: int) -> float:
        total = 0.0
        for multiplier, raw in terms:
            total += multiplier * raw[index]
        return total + constant

    return [(weight(index), hosts[index]) for index in best]
