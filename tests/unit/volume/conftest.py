"""A VolumeService over SQLite with one volume host registered and a recording RPC client."""

from __future__ import annotations

import pytest

from fabric import servicegroup
from fabric.context import RequestContext
from fabric.db.models import Project
from fabric.volume.api import VolumeService
from fabric.volume.rpcapi import BINARY, TOPIC

PROJECT = "p-volumes"
OTHER = "p-other"
HOST = "volhost1"


class RecordingVolumeRPC:
    """Records every cast and call; export answers an NBD connection_info like the worker's."""

    def __init__(self) -> None:
        self.sent: list[tuple] = []
        self.fail_export: Exception | None = None

    def __getattr__(self, method):
        def record(ctx, host, **kwargs):
            ident = kwargs.get("volume_id") or kwargs.get("snapshot_id")
            self.sent.append((method, host, ident, *(v for k, v in kwargs.items() if not k.endswith("_id"))))
            if method == "export_volume":
                if self.fail_export:
                    raise self.fail_export
                return {"driver_volume_type": "nbd", "data": {"host": "127.0.0.1", "port": 10809,
                                                              "export_name": ident, "format": "raw"}}
            return None
        return record

    def methods(self) -> list[str]:
        return [entry[0] for entry in self.sent]


@pytest.fixture
def rpc():
    return RecordingVolumeRPC()


@pytest.fixture
def service(sqlite_db, rpc):
    with sqlite_db.begin() as session:
        session.add(Project(id=PROJECT, name=PROJECT))
        session.add(Project(id=OTHER, name=OTHER))
    servicegroup.register(sqlite_db, host=HOST, binary=BINARY, topic=TOPIC, version="1", address="127.0.0.1")
    return VolumeService(sqlite_db, rpc)


@pytest.fixture
def ctx():
    return RequestContext(user_id="u1", project_id=PROJECT, roles=("member",))


@pytest.fixture
def other_ctx():
    return RequestContext(user_id="u2", project_id=OTHER, roles=("member",))
