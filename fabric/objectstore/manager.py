"""The objectstore worker's manager: serves S3 over HTTP while its Service runs.

``init_host`` first clears what a crash may have left in the blob store
(temporary files, blobs no row names), then listens on ``[objectstore]
listen``/``port`` and serves the S3 application (:mod:`fabric.objectstore.http_server`)
on a green thread, with ``[objectstore] workers`` - 1 helper processes serving the same
port (:mod:`fabric.objectstore.processes`); ``cleanup_host`` stops the helpers and
closes the socket.
"""

from __future__ import annotations

import logging
from typing import Any

from fabric import config
from fabric.manager import Manager, callers_table
from fabric.objectstore import processes
from fabric.objectstore.core import Objectstore
from fabric.objectstore.server import ObjectstoreServer, listen

__all__ = ["ObjectstoreManager", "ObjectstoreServer"]

LOG = logging.getLogger(__name__)


class ObjectstoreManager(Manager):
    topic = "objectstore"
    #: Who may call each handler: describe only (every role), the base's.
    rpc_callers = callers_table()

    def __init__(self, settings: config.Settings, host: str | None = None, db: Any = None,
                 transport: Any = None) -> None:
        super().__init__(settings, host=host, db=db, transport=transport)
        self.server: ObjectstoreServer | None = None
        self.helpers: processes.Helpers | None = None

    def init_host(self) -> None:
        service = Objectstore.from_settings(self.settings, self.db)
        service.recover()
        # This process binds first (refused if anything listens on the port already), then its
        # helpers join; it serves once they all listen, so a port that answers has them all.
        sock = listen(self.settings)
        try:
            self.helpers = processes.helpers(self.settings, self.db.backend).start()
            self.server = ObjectstoreServer(self.settings, service, sock).start()
        except BaseException:
            self.cleanup_host()
            sock.close()
            raise
        LOG.info("Objectstore serving %s from %s", self.server.url, self.settings.objectstore_dir)
        print(f"fabric objectstore listening on {self.server.url} (S3, region "
              f"{self.settings.objectstore.region}) - create keys with `openstack ec2 credentials create`",
              flush=True)

    def cleanup_host(self) -> None:
        if self.helpers is not None:
            self.helpers.stop()
            self.helpers = None
        if self.server is not None:
            self.server.stop()
            self.server = None

    def capabilities(self) -> dict[str, Any]:
        return {"url": self.server.url if self.server else None,
                "region": self.settings.objectstore.region}
