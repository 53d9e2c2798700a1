"""Server drift made through libvirt itself (its test driver): a domain undefined behind fabric's
back is stale, one defined behind its back is an orphan, and the fixes go through the worker."""

from __future__ import annotations

import uuid

import pytest

from fabric.compute import states
from fabric.compute.manager import ComputeManager
from tests.unit.compute.conftest import (
    HOST,
    FakeAddresses,
    FakeClaims,
    FakeImages,
    FakeNetwork,
    FakeRescheduler,
    add_instance,
)
from tests.unit.virt.conftest import libvirt_settings, node_uri

EXTRA_DOMAIN = """<domain type='test'>
  <name>fabric-{uuid}</name><uuid>{uuid}</uuid>
  <memory unit='MiB'>64</memory><vcpu>1</vcpu>
  <os><type>hvm</type></os>
</domain>"""


@pytest.fixture
def manager(sqlite_db, tmp_path):
    from fabric.virt.libvirt.driver import LibvirtDriver

    settings = libvirt_settings(tmp_path, node_uri(tmp_path)).replace(default={"host": HOST})
    made = ComputeManager(settings, HOST, sqlite_db, driver=LibvirtDriver(settings), addresses=FakeAddresses(),
                          network=FakeNetwork(), rescheduler=FakeRescheduler(), claims=FakeClaims(),
                          images=FakeImages())
    made.driver.init_host(HOST)
    yield made
    made.driver.cleanup_host()


def test_domains_undefined_or_defined_behind_fabrics_back(manager, ctx):
    kept, undefined = add_instance(manager.db), add_instance(manager.db)
    for instance_id in (kept, undefined):
        manager.build_instance(ctx, instance_id)
        assert states.get_instance(manager.db, instance_id)["vm_state"] == "active"
    extra = str(uuid.uuid4())

    def behind_our_back(conn):
        dom = conn.lookupByUUIDString(undefined)
        dom.destroy()
        dom.undefine()
        conn.defineXML(EXTRA_DOMAIN.format(uuid=extra)).create()

    manager.driver.host.call(behind_our_back)
    report = manager.reconcile_servers(ctx)
    assert sorted((f["kind"], f["ident"]) for f in report["findings"]) == sorted(
        [("stale", undefined), ("orphan", extra)])

    fixed = manager.reconcile_servers(ctx, {"stale": True, "orphans": True})
    assert all(f["fixed"] for f in fixed["findings"])
    assert states.get_instance(manager.db, undefined)["vm_state"] == "error"
    assert sorted(manager.driver.list_instances()) == [kept]  # the orphan destroyed and undefined
    assert manager.reconcile_servers(ctx)["findings"] == []
