"""The outbox's unit tests use a private memory:// broker per test (``settings``) and SQLite."""

from tests.unit.rpc.conftest import settings  # noqa: F401 - a fixture
