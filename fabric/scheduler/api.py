"""What other services use from the scheduler.

* The API casts :meth:`SchedulerAPI.schedule_and_build` once it has written
  the instance row (``vm_state='building'``, ``host`` NULL).
* A compute worker whose build failed casts it again with ``failed_host``;
  the scheduler then releases that host's claim and tries another.
* A compute worker deleting an instance gives its resources back with
  :func:`release_instance_claim` (idempotent), in its own transaction.
"""

from __future__ import annotations

from fabric.db import Database
from fabric.scheduler import claims


def release_instance_claim(db: Database, instance_id: str, host: str) -> bool:
    """Give back what ``instance_id`` holds on ``host`` (usage and group slot) and clear its host.

    Returns False when the instance is not on ``host`` (already released).
    """
    return claims.release(db, instance_id, host)


def release_usage(session, host: str, resources: dict) -> None:
    """Give a move's claim (``resources``: vcpus, memory_mb, disk_gb) back to ``host``, in the
    caller's transaction (fabric.compute.migrations, on a confirm or revert)."""
    claims.release_usage(session, host, resources)


def __getattr__(name: str):
    # SchedulerAPI needs the RPC layer; import it only when asked for.
    if name == "SchedulerAPI":
        from fabric.scheduler.rpcapi import SchedulerAPI
        return SchedulerAPI
    raise AttributeError(name)


__all__ = ["release_instance_claim", "release_usage"]  # and SchedulerAPI, loaded on first use
