"""A compute manager on the fake driver with fake collaborators that record what they were asked."""

from __future__ import annotations

import pytest

from fabric.compute.manager import ComputeManager
from fabric.config import Settings
from fabric.context import RequestContext
from fabric.exception import Invalid
from fabric.virt.driver import BootImage
from fabric.virt.fake import FakeDriver
from tests.fixtures import instances

HOST = "cmp1"


class FakeAddresses:
    def __init__(self) -> None:
        self.allocated: dict[tuple[str, int], dict] = {}
        self.released: list[tuple[str, int]] = []
        self.fail_with: Exception | None = None

    def allocate(self, ctx, instance, index, request):
        if self.fail_with:
            raise self.fail_with
        key = (instance["id"], index)
        if key not in self.allocated:  # idempotent per request token, as IPAM is
            self.allocated[key] = {"id": f"port-{instance['id'][:8]}-{index}", "network_id": request["network_id"],
                                   "mac": f"52:54:00:00:{len(self.allocated) // 256:02x}:{len(self.allocated) % 256:02x}",
                                   "address": f"10.0.0.{len(self.allocated) + 2}"}
        return self.allocated[key]

    def release(self, ctx, instance, index, vif):
        self.allocated.pop((instance["id"], index), None)
        self.released.append((instance["id"], index))


class FakeNetwork:
    def __init__(self) -> None:
        self.plugged: dict[str, str] = {}
        self.unplugged: list[str] = []
        self.on_plug = None

    def plug(self, ctx, host, vif):
        if self.on_plug:
            self.on_plug(vif)
        self.plugged[vif["id"]] = host
        return {"tap": f"tap{vif['id'][-10:]}"[:15]}

    def unplug(self, ctx, host, vif):
        self.plugged.pop(vif["id"], None)
        self.unplugged.append(vif["id"])


class FakeRescheduler:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str]] = []
        self.fail_with: Exception | None = None

    def stage(self, session, ctx, instance_id, failed_host, reason):
        return (instance_id, failed_host, reason)

    def send(self, staged):
        if self.fail_with:
            raise self.fail_with
        self.requests.append(staged)


class FakeClaims:
    def __init__(self) -> None:
        self.released: list[tuple[str, str]] = []

    def release(self, instance_id, host):
        self.released.append((instance_id, host))
        return True


class FakeImages:
    def boot_image(self, ctx, instance):
        if instance["image_id"] == "broken":
            raise Invalid(reason=f"image {instance['image_id']} cannot boot")
        return BootImage(kernel="/images/vmlinux", initrd="/images/initrd")


@pytest.fixture
def ctx():
    return RequestContext.admin()


@pytest.fixture
def make_manager(sqlite_db):
    def make(db=None, **compute):
        settings = Settings().replace(default={"host": HOST}, compute=compute) if compute else \
            Settings().replace(default={"host": HOST})
        driver = FakeDriver(vcpus=8, memory_mb=4096, disk_gb=100, hostname=HOST)
        manager = ComputeManager(settings, HOST, db or sqlite_db, driver=driver, addresses=FakeAddresses(),
                                 network=FakeNetwork(), rescheduler=FakeRescheduler(), claims=FakeClaims(),
                                 images=FakeImages())
        driver.init_host(HOST)
        return manager
    return make


@pytest.fixture
def manager(make_manager):
    return make_manager()


def add_instance(db, *, host=HOST, networks=1, image_id="img", **values) -> str:
    """An instance row on ``host`` (:func:`tests.fixtures.instances.add_instance`, building/scheduling)
    asking for ``networks`` networks (net0, net1 ...) and booting ``image_id``; ``values`` override
    any other column. Returns its id."""
    return instances.add_instance(db, host=host, image_id=image_id, disk_gb=1,
                                  requested_networks=[{"network_id": f"net{i}"} for i in range(networks)], **values)
