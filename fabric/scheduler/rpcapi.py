"""Client side of the scheduler's RPC interface: the one place that picks cast or call.

``schedule_and_build`` is a cast to the shared ``scheduler`` queue (any
worker may take it; the message is persistent and acked only after the
decision, so a worker dying mid-decision hands it to another);
``select_destinations`` and ``decision_stats`` are calls.
"""

from __future__ import annotations

from typing import Any

from fabric import rpc
from fabric.context import RequestContext

TOPIC = "scheduler"


class SchedulerAPI:
    """Ask the scheduler workers to place instances."""

    def __init__(self, transport: Any, *, timeout: float | None = None) -> None:
        self.client = rpc.RPCClient(transport, rpc.Target(topic=TOPIC), timeout=timeout)

    def schedule_and_build(self, ctx: RequestContext, instance_id: str, *,
                           failed_host: str | None = None, reason: str | None = None) -> None:
        """Place a building instance and have its host build it (cast).

        Compute workers call it with ``failed_host`` (and ``reason``) when a
        build failed there, to have it rescheduled elsewhere.
        """
        kwargs: dict[str, Any] = {"instance_id": instance_id}
        if failed_host is not None:
            kwargs.update(failed_host=failed_host, reason=reason)
        self.client.cast(ctx, "schedule_and_build", **kwargs)

    def select_destinations(self, ctx: RequestContext, request_spec: dict[str, Any],
                            limit: int | None = None) -> list[dict[str, Any]]:
        """Hosts that fit a request spec, best first, without claiming (call).

        Raises NoValidHost (with per-filter counts) or Invalid for a bad spec.
        """
        return self.client.call(ctx, "select_destinations", request_spec=request_spec, limit=limit)

    def claim_move_destination(self, ctx: RequestContext, migration_id: str) -> str:
        """Choose and claim a resize's or cold migration's destination host (call; any worker).
        Raises NoValidHost."""
        return self.client.call(ctx, "claim_move_destination", migration_id=migration_id)

    def decision_stats(self, ctx: RequestContext, host: str, *, reset: bool = False) -> dict[str, Any]:
        """One worker's decision latencies and outcome counts (call to ``scheduler.<host>``)."""
        return self.client.prepare(server=host).call(ctx, "decision_stats", reset=reset)
