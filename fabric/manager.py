"""The base of every worker's manager (the server side of a service's RPC API).

A manager's public methods are its RPC handlers, called as
``method(ctx, **kwargs)``. Every manager answers ``describe`` with who it is,
its version and its capabilities; subclasses extend :meth:`capabilities` and
may override the :meth:`init_host` / :meth:`cleanup_host` hooks that the
:class:`~fabric.service.Service` runs around consuming. Periodic work is a
method marked with :func:`fabric.periodic.periodic_task`.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import fabric
from fabric import config, periodic
from fabric.context import RequestContext

if TYPE_CHECKING:
    from fabric.db import Database
    from fabric.service import Service


class Manager:
    """A worker's RPC endpoint. Subclasses set ``topic`` and add handlers."""

    #: The queue topic this manager serves ("compute", "ipam" ...).
    topic: str = ""

    def __init__(self, settings: config.Settings, host: str | None = None,
                 db: Database | None = None, transport: Any = None) -> None:
        self.settings = settings
        self.host = host or settings.default.host
        self.db = db
        self.transport = transport
        #: The Service serving this manager (set by the Service itself).
        self.service: Service | None = None

    @property
    def rpc_private(self) -> frozenset[str]:
        """Public methods that are not RPC handlers: the lifecycle hooks and the
        periodic tasks, which only the worker itself may run."""
        tasks = {name for name, member in inspect.getmembers(type(self)) if periodic.is_periodic_task(member)}
        return frozenset({"init_host", "cleanup_host", "capabilities", "rpc_private"} | tasks)

    def capabilities(self) -> dict[str, Any]:
        """What this worker offers, recorded in the services registry (JSON-safe)."""
        return {}

    def init_host(self) -> None:
        """Called once by the Service before it starts consuming."""

    def cleanup_host(self) -> None:
        """Called once by the Service after in-flight work finished at stop."""

    def describe(self, ctx: RequestContext) -> dict[str, Any]:
        """Who this worker is: binary, topic, host, address, version, capabilities.

        Served, that is what its :class:`~fabric.service.Service` records; not
        served (a bare manager in a test), binary and address are empty.
        """
        if self.service is not None:
            return self.service.describe(ctx)
        return {"binary": "", "topic": self.topic, "host": self.host, "address": "",
                "version": fabric.__version__, "capabilities": self.capabilities()}
