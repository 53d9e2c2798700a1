"""Reconciliation: finding where a host or the address pools disagree with the database,
and repairing what the operator names (after Synnefo's ``logic/reconciliation.py``).

Three kinds of drift, the same words for every area:

- ``stale``: the database says it should exist; it does not (a server whose guest is
  gone, a bridge or tap deleted, a DHCP entry or nftables rule removed, a port whose
  address the pool lost);
- ``orphan``: it exists without the database knowing it (a guest of no live server of
  this host, a leftover link or route, an extra DHCP entry or rule, an address held
  for no port);
- ``unsynced``: both have it and they differ (power state, a route's next hop, a
  DHCP entry's address).

A report changes nothing. A fix runs only for the kinds :class:`Fixes` names, and
only through the code path the workers use for normal events (see each area's
module: :mod:`.servers`, :mod:`.networks`, :mod:`.addresses`), inside the worker
that owns the thing, so a fix and a normal event are serialised and guarded the same
way and cannot fight. Each area's worker also runs its report periodically and logs
one line per finding (:func:`log_findings`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import Any

from fabric.exception import Invalid

STALE, ORPHAN, UNSYNCED = "stale", "orphan", "unsynced"
#: Every kind of drift, in report order.
KINDS = (STALE, ORPHAN, UNSYNCED)


@dataclasses.dataclass(frozen=True)
class Fixes:
    """Which kinds of drift to repair (none: report only)."""

    stale: bool = False
    orphans: bool = False
    unsynced: bool = False

    @classmethod
    def all(cls) -> Fixes:
        return cls(True, True, True)

    def wants(self, kind: str) -> bool:
        """Whether findings of ``kind`` are to be repaired. Raises Invalid for an unknown kind."""
        if kind not in KINDS:
            raise Invalid(reason=f"drift kind {kind!r} is unknown; accepted: {', '.join(KINDS)}")
        return {STALE: self.stale, ORPHAN: self.orphans, UNSYNCED: self.unsynced}[kind]

    def __bool__(self) -> bool:
        return self.stale or self.orphans or self.unsynced

    def to_dict(self) -> dict[str, bool]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Fixes:
        """From :meth:`to_dict`'s form. Raises Invalid naming an unknown or non-boolean key."""
        data = data or {}
        names = {f.name for f in dataclasses.fields(cls)}
        for key, value in data.items():
            if key not in names or not isinstance(value, bool):
                raise Invalid(reason=f"fix {key}={value!r}: accepted are {', '.join(sorted(names))} "
                                     "with true or false")
        return cls(**data)


@dataclasses.dataclass
class Finding:
    """One disagreement between the database and what is real.

    ``what`` names the object (``server``, ``bridge``, ``tap``, ``route``, ``dhcp-entry``,
    ``nft-rule``, ``allocation``, ``port`` ...), ``ident`` which one, ``detail`` what
    differs. After a fix ran: ``fixed`` True, or ``error`` saying why it failed.
    """

    kind: str
    what: str
    ident: str
    detail: str
    host: str | None = None
    fixed: bool = False
    error: str | None = None

    def line(self) -> str:
        """The finding as one log or report line."""
        where = f"{self.host}: " if self.host else ""
        outcome = " [fixed]" if self.fixed else (f" [fix failed: {self.error}]" if self.error else "")
        return f"{where}{self.kind} {self.what} {self.ident}: {self.detail}{outcome}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


def report(host: str | None, findings: Iterable[Finding]) -> dict[str, Any]:
    """What a worker answers a reconcile call with: its host and its findings (as dicts)."""
    return {"host": host, "findings": [f.to_dict() for f in findings]}


def log_findings(logger: logging.Logger, area: str, host: str | None, findings: list[Finding]) -> None:
    """One warning line per finding (``drift <area>: ...``), nothing when there is none."""
    for finding in findings:
        logger.warning("drift %s on %s: %s", area, host, finding.line())
