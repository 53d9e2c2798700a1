"""The objectstore worker's manager: serves S3 over HTTP while its Service runs.

``init_host`` first clears what a crash may have left in the blob store
(temporary files, blobs no row names), then listens on ``[objectstore]
listen``/``port`` and serves the S3 application with ``eventlet.wsgi`` on a
green thread; ``cleanup_host`` closes the socket.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import eventlet
import eventlet.wsgi

from fabric import config
from fabric.manager import Manager, callers_table
from fabric.objectstore.app import build_app
from fabric.objectstore.core import Objectstore

LOG = logging.getLogger(__name__)


class ObjectstoreServer:
    """One listening objectstore: ``start()`` serves on a green thread, ``stop()`` ends it."""

    def __init__(self, settings: config.Settings, service: Objectstore) -> None:
        listen = settings.objectstore.listen
        family = socket.AF_INET6 if ":" in listen else socket.AF_INET
        self.sock = eventlet.listen((listen, settings.objectstore.port), family=family, backlog=512)
        self.port = self.sock.getsockname()[1]
        host = "127.0.0.1" if listen in ("0.0.0.0", "") else listen
        self.url = settings.objectstore.public_url.rstrip("/") or \
            f"http://{f'[{host}]' if ':' in host else host}:{self.port}"
        self.app = build_app(service)
        self._thread = None

    def serve(self) -> None:
        eventlet.wsgi.server(self.sock, self.app, log=logging.getLogger("fabric.objectstore.wsgi"),
                             log_output=False, max_size=1000, keepalive=True, socket_timeout=300,
                             # S3 sends header names as set (x-amz-meta-* in lower case); SDKs keep
                             # the case of user metadata names as they receive it.
                             capitalize_response_headers=False)

    def start(self) -> ObjectstoreServer:
        self._thread = eventlet.spawn(self.serve)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.kill()
            self._thread = None
        self.sock.close()


class ObjectstoreManager(Manager):
    topic = "objectstore"
    #: Who may call each handler: describe only (every role), the base's.
    rpc_callers = callers_table()

    def __init__(self, settings: config.Settings, host: str | None = None, db: Any = None,
                 transport: Any = None) -> None:
        super().__init__(settings, host=host, db=db, transport=transport)
        self.server: ObjectstoreServer | None = None

    def init_host(self) -> None:
        service = Objectstore.from_settings(self.settings, self.db)
        service.recover()
        self.server = ObjectstoreServer(self.settings, service).start()
        LOG.info("Objectstore serving %s from %s", self.server.url, self.settings.objectstore_dir)
        print(f"fabric objectstore listening on {self.server.url} (S3, region "
              f"{self.settings.objectstore.region}) - create keys with `openstack ec2 credentials create`",
              flush=True)

    def cleanup_host(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def capabilities(self) -> dict[str, Any]:
        return {"url": self.server.url if self.server else None,
                "region": self.settings.objectstore.region}
