"""Weighers: which of the hosts that passed the filters comes first.

RAM and vCPU weighers normalise free capacity over the candidate hosts to
0..1; with ``spread`` the emptiest host wins, otherwise (stack) the fullest
host that still fits. The failed-build weigher takes a fixed penalty per
recent failed build, so one bad host stops attracting every retry.
"""

from __future__ import annotations

import datetime
import heapq
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

    def raw_weights(self, hosts: list[HostState], spec: RequestSpec) -> list[float]:
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

    def raw_weights(self, hosts: list[HostState], spec: RequestSpec) -> list[float]:
        # Almost every host has no failed build: test that first, cheaply.
        raw_weight = self.raw_weight
        return [raw_weight(h, spec) if h.failed_builds else 0.0 for h in hosts]


class ServerGroupSoftWeigher(Weigher):
    """Soft-affinity: +1 for a host holding a member of the server's group; soft-anti-affinity:
    -1. Not normalised and multiplied by 10, so it outweighs the RAM and vCPU weighers (0..1
    each) whenever a fitting host can honour the policy, and only then."""

    normalise = False

    def __init__(self, settings: SchedulerSection) -> None:
        self.multiplier = 10.0

    def raw_weights(self, hosts: list[HostState], spec: RequestSpec) -> list[float]:
        sign = {SOFT_AFFINITY: 1.0, SOFT_ANTI_AFFINITY: -1.0}.get(spec.group_policy or "")
        if sign is None or not spec.group_hosts:
            return [0.0] * len(hosts)
        held = spec.group_hosts
        return [sign if h.host in held else 0.0 for h in hosts]

    def raw_weight(self, host: HostState, spec: RequestSpec) -> float:
        return self.raw_weights([host], spec)[0]


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
    totals: list[float] | None = None
    for weigher in weighers:
        weigher.start()
        raw = weigher.raw_weights(hosts, spec)
        multiplier, offset = weigher.multiplier, 0.0
        if weigher.normalise and raw:
            low, high = min(raw), max(raw)
            if high == low:
                continue  # every host equal: this weigher orders nothing
            multiplier /= high - low
            offset = -low * multiplier
        if totals is None:
            totals = [multiplier * value + offset for value in raw]
        else:
            totals = [total + multiplier * value + offset for total, value in zip(totals, raw, strict=True)]
    if totals is None:
        totals = [0.0] * len(hosts)
    # Kept apart from the weight: the tie-break orders, the weight is reported.
    if rng is not None:
        keys = [total + rng.random() * _TIEBREAK_SCALE for total in totals]
    else:
        # Each host's key is drawn once per process: different scheduler processes
        # order equal hosts differently, at no cost per decision.
        keys = [total + host.tiebreak * _TIEBREAK_SCALE for total, host in zip(totals, hosts, strict=True)]
    order = range(len(hosts))
    if limit is not None and limit < len(hosts):
        best = heapq.nlargest(limit, order, key=keys.__getitem__)
    else:
        best = sorted(order, key=keys.__getitem__, reverse=True)
    return [(totals[i], hosts[i]) for i in best]
