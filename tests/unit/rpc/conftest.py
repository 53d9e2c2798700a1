"""Unit-test fixtures for fabric.rpc: ``settings`` naming a private memory:// broker per test,
which the shared ``transport`` fixture (tests/conftest.py) connects to. Other unit packages
that drive RPC import ``settings`` from here."""

from __future__ import annotations

import secrets

import pytest

from fabric import config
from tests.fixtures.rpc import wait_for  # noqa: F401 - other test packages import it from here


@pytest.fixture
def settings() -> config.Settings:
    """Default settings whose transport is a memory:// broker of this test's own."""
    url = f"memory://test-{secrets.token_hex(4)}"
    return config.load(None).replace(rpc={"transport_url": url, "call_timeout": 5.0,
                                          "max_deliveries": 3})
