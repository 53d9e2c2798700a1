"""Which workers exist: binary -> topic and manager, resolved lazily.

Each worker package provides its manager in ``fabric/<worker>/manager.py``.
Managers are imported only when a launcher builds that worker, so a launcher
never loads the other workers' code.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from fabric import config
from fabric.manager import Manager


@dataclasses.dataclass(frozen=True)
class Worker:
    """One kind of worker: its launcher name, queue topic and manager class."""

    binary: str
    topic: str
    #: "module:Class" of its manager.
    manager: str


WORKERS: dict[str, Worker] = {
    worker.binary: worker
    for worker in (
        Worker("fabric-api", "api", "fabric.api.manager:ApiManager"),
        Worker("fabric-scheduler", "scheduler", "fabric.scheduler.manager:SchedulerManager"),
        Worker("fabric-compute", "compute", "fabric.compute.manager:ComputeManager"),
        Worker("fabric-network", "network", "fabric.network.manager:NetworkManager"),
        Worker("fabric-ipam", "ipam", "fabric.ipam.manager:IpamManager"),
        Worker("fabric-objectstore", "objectstore", "fabric.objectstore.manager:ObjectstoreManager"),
        Worker("fabric-volume", "volume", "fabric.volume.manager:VolumeManager"),
    )
}

#: The workers ``fabric-all`` runs in one process, in start order.
ALL_IN_ONE = ("fabric-ipam", "fabric-network", "fabric-compute", "fabric-scheduler", "fabric-objectstore",
              "fabric-volume", "fabric-api")


def worker(binary: str) -> Worker:
    """The worker launched as ``binary``; raises KeyError naming the known ones."""
    try:
        return WORKERS[binary]
    except KeyError:
        raise KeyError(f"unknown worker {binary!r}; known: {', '.join(WORKERS)}") from None


def manager_class(spec: Worker) -> type[Manager]:
    """The worker's manager class (its module is imported only now)."""
    module_name, _, class_name = spec.manager.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def build_manager(binary: str, settings: config.Settings, *, host: str | None = None,
                  db: Any = None, transport: Any = None) -> Manager:
    """A manager instance for ``binary``; raises KeyError for an unknown binary."""
    return manager_class(worker(binary))(settings, host=host, db=db, transport=transport)
