"""``fabric-manage reconcile``: the workers asked over RPC (a memory:// broker), one line per finding."""

from __future__ import annotations

import io

import pytest

from fabric import rpc, servicegroup
from fabric.cmd import manage
from fabric.cmd.manage_reconcile import reconcile
from fabric.compute import states
from fabric.exception import Invalid, NotFound
from fabric.reconcile import Fixes
from tests.unit.compute.conftest import add_instance


@pytest.fixture
def served(manager, transport):
    """The fake-driver compute manager of tests/unit/compute, serving ``compute.cmp1`` and registered up."""
    server = rpc.RPCServer(transport, topic="compute", host="cmp1", endpoint=manager)
    server.start()
    servicegroup.register(manager.db, host="cmp1", binary="fabric-compute", topic="compute", version="test")
    servicegroup.register(manager.db, host="cmp9", binary="fabric-compute", topic="compute", version="test")
    servicegroup.heartbeat(manager.db, host="cmp9", binary="fabric-compute", topic="compute")
    yield manager
    server.stop()
    server.wait(5)


def test_the_command_reports_each_host_over_rpc_and_fixes_only_what_is_asked(served, ctx, transport):
    gone = add_instance(served.db)
    served.build_instance(ctx, gone)
    served.driver.destroy(gone)
    out = io.StringIO()
    # cmp9 is registered but serves nothing: a host that does not answer is named, not fatal.
    findings = reconcile("servers", Fixes(), db=served.db, transport=transport, timeout=2, out=out)
    text = out.getvalue()
    assert [f.ident for f in findings] == [gone]
    assert f"cmp1: stale server {gone}: active in the database, no guest on the hypervisor\n" in text
    assert "cmp9: not checked:" in text
    assert "servers: 1 finding(s) (1 stale, 0 orphan, 0 unsynced) on cmp1; 0 fixed." in text
    assert states.get_instance(served.db, gone)["vm_state"] == "active"

    out = io.StringIO()
    findings = reconcile("servers", Fixes(stale=True), db=served.db, transport=transport, host="cmp1", out=out)
    assert [f.fixed for f in findings] == [True]
    assert f"cmp1: stale server {gone}: active in the database, no guest on the hypervisor [fixed]" in out.getvalue()
    assert states.get_instance(served.db, gone)["vm_state"] == "error"
    assert reconcile("servers", Fixes(), db=served.db, transport=transport, host="cmp1", out=io.StringIO()) == []


def test_bad_usage_names_the_bad_value(served, transport):
    with pytest.raises(NotFound, match="nowhere"):
        reconcile("servers", Fixes(), db=served.db, transport=transport, host="nowhere", out=io.StringIO())
    with pytest.raises(Invalid, match="--host cmp1"):
        reconcile("addresses", Fixes(), db=served.db, transport=transport, host="cmp1", out=io.StringIO())
    with pytest.raises(Invalid, match="'disks'"):
        reconcile("disks", Fixes(), db=served.db, transport=transport, out=io.StringIO())


def test_the_flags_parse_into_the_fixes_they_name():
    args = manage.build_parser().parse_args(["reconcile", "networks", "--host", "h1", "--fix-orphans"])
    assert (args.area, args.host, args.fix_stale, args.fix_orphans, args.fix_unsynced, args.fix_all) == \
        ("networks", "h1", False, True, False, False)
    with pytest.raises(SystemExit):
        manage.build_parser().parse_args(["reconcile", "disks"])
