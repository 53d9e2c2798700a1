"""Every worker's manager names who may call each of its RPC handlers, and nothing else."""

from __future__ import annotations

import pytest

from fabric.cmd import workers
from fabric.rpc import signing
from fabric.rpc.server import public_methods


@pytest.mark.parametrize("binary", sorted(workers.WORKERS))
def test_every_handler_names_its_callers(binary):
    manager_class = workers.manager_class(workers.worker(binary))
    table = manager_class.rpc_callers
    assert table is not None, f"{manager_class.__name__} has no rpc_callers table"
    handlers = set(public_methods(manager_class.__new__(manager_class)))
    assert set(table) == handlers, "handlers and table differ"
    assert all(roles <= signing.ANY_ROLE for roles in table.values())


def test_a_compute_host_asks_ipam_only_for_addresses():
    from fabric.ipam.manager import IpamManager

    asked = {method for method, roles in IpamManager.rpc_callers.items() if "compute" in roles}
    assert asked == {"describe", "describe_segment", "allocate", "release", "lookup", "list_allocations"}
