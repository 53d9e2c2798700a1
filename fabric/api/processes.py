"""The API's helper processes: ``[api] workers`` processes serve its one port (how, and what
they promise: :mod:`fabric.wsgi_processes`).

What is the API's own: a helper serves the same application with its own database and broker
connections and its own cast outbox, whose relay it runs (a helper that died leaves rows that
a relay of the API takes over, as after any API process's death: :mod:`fabric.rpc.outbox`).
The worker's own process alone creates the first admin, registers in the services registry,
answers RPC and purges expired tokens. The in-process ``memory://`` transport reaches no other
process, so there the API runs in one process.
"""

from __future__ import annotations

from collections.abc import Callable

from fabric import config, wsgi_processes
from fabric.db import Database
from fabric.exception import InvalidSetting

#: The launcher module whose ``helper()`` runs in a helper process.
LAUNCHER = "fabric.cmd.api"


def process_count(settings: config.Settings, backend: str) -> int:
    """How many processes serve the API (``[api] workers``: see :func:`wsgi_processes.process_count`).
    Raises InvalidSetting for more than one on the memory:// transport."""
    if settings.rpc.transport_url.startswith("memory://"):
        if settings.api.workers > 1:
            raise InvalidSetting(source="settings", section="api", option="workers", value=settings.api.workers,
                                 reason="the memory:// transport reaches no other process, so helper processes "
                                        "could not reach the workers: set 1 (or 0), or an amqp:// [rpc] "
                                        "transport_url")
        return 1
    return wsgi_processes.process_count(settings.api.workers, port=settings.api.port, backend=backend)


def helpers(settings: config.Settings, backend: str) -> wsgi_processes.Helpers:
    """The helpers this worker runs beside itself (not started yet); InvalidSetting as :func:`process_count`."""
    return wsgi_processes.Helpers(settings, service="API", launcher=LAUNCHER, port=settings.api.port,
                                  count=process_count(settings, backend) - 1)


def serve_helper(settings: config.Settings, port: int) -> Callable[[], None]:
    """In a helper: serve the API on ``port`` beside the worker; the function that stops it."""
    from fabric import rpc
    from fabric.api.clients import rpc_clients
    from fabric.api.server import ApiServer, listen
    from fabric.rpc import signing

    # Its casts and calls are the API's: signed with the API's key, as the worker's are.
    signing.install(signing.from_settings(settings, ["api"], default_role="api"))
    db = Database.from_settings(settings)
    transport = rpc.get_transport(settings.rpc)
    server = ApiServer(settings, db, rpc_clients(transport, settings.rpc.call_timeout),
                       sock=listen(settings, port, join=True))
    outbox = server.app.deps.outbox
    outbox.start()
    server.start()

    def stop() -> None:
        server.stop()
        outbox.stop()
        transport.cleanup()
        db.dispose()

    return stop
