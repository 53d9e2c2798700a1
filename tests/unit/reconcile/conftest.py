"""Reconciliation unit tests reuse the compute manager on the fake driver (tests/unit/compute)
and the private memory:// broker of the RPC tests."""

from tests.unit.compute.conftest import ctx, make_manager, manager  # noqa: F401 - fixtures
from tests.unit.rpc.conftest import settings  # noqa: F401 - fixtures
