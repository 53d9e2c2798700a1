"""Fixtures for the database-resilience unit tests: the RPC fixtures' private memory:// broker."""

from tests.unit.rpc.conftest import settings  # noqa: F401 - the memory broker the shared transport fixture uses
