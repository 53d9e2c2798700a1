"""The API worker's manager: serves HTTP while its Service runs.

The launcher (``fabric-api``, ``fabric-all``) builds it like every other
worker; ``init_host`` opens the listening socket and serves the WSGI app on a
green thread with clients over the process's transport, beside ``[api] workers``
- 1 helper processes serving the same port (:mod:`fabric.api.processes`);
``cleanup_host`` stops the helpers and closes the socket.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import sqlalchemy as sa

from fabric import config, periodic, wsgi_processes
from fabric.api import image_uploads, processes, tokens
from fabric.api.bootstrap import bootstrap
from fabric.api.clients import rpc_clients
from fabric.api.server import ApiServer, listen
from fabric.db.models import User
from fabric.manager import Manager, callers_table

LOG = logging.getLogger(__name__)


class ApiManager(Manager):
    topic = "api"
    #: Who may call each handler: describe only (every role), the base's.
    rpc_callers = callers_table()

    def __init__(self, settings: config.Settings, host: str | None = None, db: Any = None,
                 transport: Any = None) -> None:
        super().__init__(settings, host=host, db=db, transport=transport)
        self.server: ApiServer | None = None
        self.helpers: wsgi_processes.Helpers | None = None

    def init_host(self) -> None:
        password = self._first_admin()
        # This process binds first (refused if anything listens on the port), then its helpers
        # join (fabric.api.processes); it serves once they all listen.
        sock = listen(self.settings)
        try:
            self.helpers = processes.helpers(self.settings, self.db.backend).start()
            self.server = ApiServer(self.settings, self.db, rpc_clients(self.transport, self.settings.rpc.call_timeout),
                                    sock=sock)
        except BaseException:
            self.cleanup_host()
            sock.close()
            raise
        #: The service starts its relay (fabric.rpc.outbox): the casts a killed API left are sent.
        self.outbox = self.server.app.deps.outbox
        self.server.start()
        print(f"fabric API listening on {self.server.url} - point the openstack CLI at it with:\n"
              f"  export OS_AUTH_URL={self.server.url}/v3 OS_USERNAME=admin OS_PROJECT_NAME=admin "
              f"OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default OS_PASSWORD={password or '...'}",
              flush=True)

    def _first_admin(self) -> str | None:
        """On a database with no users, create the admin (as ``fabric-manage bootstrap`` would) so a
        fresh ``fabric-all`` is usable at once; returns the password then, else None."""
        with self.db.begin() as session:
            if session.scalar(sa.select(User.id).limit(1)) is not None:
                return None
        generated = secrets.token_urlsafe(12)
        bootstrap(self.db, self.settings.api.admin_password or generated, region=self.settings.api.region)
        LOG.info("Created the admin user and project on an empty database")
        return None if self.settings.api.admin_password else generated

    def cleanup_host(self) -> None:
        if self.helpers is not None:
            self.helpers.stop()
            self.helpers = None
        if self.server is not None:
            self.server.stop()
            self.server = None

    @periodic.periodic_task(3600)
    def purge_expired_tokens(self, ctx) -> None:
        """Expired tokens are useless; drop them so the table stays small."""
        purged = tokens.purge_expired(self.db)
        if purged:
            LOG.info("Purged %d expired token(s)", purged)

    @periodic.periodic_task(lambda self: self.settings.api.image_upload_lease)
    def reap_stalled_image_uploads(self, ctx) -> None:
        """An image whose uploading API process died stays saving no longer than its lease
        (fabric.api.image_uploads): it goes back to queued."""
        for image_id in image_uploads.reap(self.db):
            LOG.warning("image %s: its upload stopped (no bytes for [api] image_upload_lease = %gs: the uploading "
                        "API process died); saving -> queued", image_id, self.settings.api.image_upload_lease)

    def capabilities(self) -> dict[str, Any]:
        return {"url": self.server.url if self.server else None}
