"""The base of every worker's manager (the server side of a service's RPC API).

A manager's public methods are its RPC handlers, called as
``method(ctx, **kwargs)``. Every manager answers ``describe`` with who it is,
its version and its capabilities; subclasses extend :meth:`capabilities` and
may override the :meth:`init_host` / :meth:`cleanup_host` hooks that the
:class:`~fabric.service.Service` runs around consuming. Periodic work is a
method marked with :func:`fabric.periodic.periodic_task`.

Each worker's manager names, in one table beside its class (``rpc_callers``, built
with :func:`callers_table`), the roles whose signed messages may call each handler;
the RPC server refuses any other signer before dispatch (:mod:`fabric.rpc.signing`),
and a handler missing from the table can be called by no one. A manager without a
table (the base's None: test stand-ins) takes any role's signed messages; every
worker in :mod:`fabric.cmd.workers` has one (``tests/unit/rpc/test_callers.py``).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import fabric
from fabric import config, periodic
from fabric.context import RequestContext
from fabric.rpc import signing

if TYPE_CHECKING:
    from fabric.db import Database
    from fabric.service import Service


def callers_table(**methods: Iterable[str]) -> dict[str, frozenset[str]]:
    """A manager's ``rpc_callers``: ``describe`` open to every role, plus each named
    method with the roles that may call it. Raises ValueError naming an unknown role."""
    table = {"describe": signing.ANY_ROLE}
    for method, roles in methods.items():
        unknown = set(roles) - signing.ANY_ROLE
        if unknown:
            raise ValueError(f"{method}: unknown role(s) {sorted(unknown)}; roles are {', '.join(signing.ROLES)}")
        table[method] = frozenset(roles)
    return table


class Manager:
    """A worker's RPC endpoint. Subclasses set ``topic``, add handlers and name their callers."""

    #: The queue topic this manager serves ("compute", "ipam" ...).
    topic: str = ""
    #: Handler -> roles that may call it (see the module docstring).
    rpc_callers: ClassVar[dict[str, frozenset[str]] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "rpc_callers" in cls.__dict__ and cls.rpc_callers is not None:
            # A process holding several roles' keys (fabric-all) signs as a role the table accepts.
            signing.register_callers(cls.topic, cls.rpc_callers)

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
