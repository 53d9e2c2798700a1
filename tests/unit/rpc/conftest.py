"""Unit-test fixtures for fabric.rpc: a private memory:// broker per test."""

from __future__ import annotations

import secrets

import pytest

from fabric import config, rpc
from tests.fixtures.rpc import wait_for  # noqa: F401 - other test packages import it from here


@pytest.fixture
def rpc_settings():
    url = f"memory://test-{secrets.token_hex(4)}"
    return config.load(None).replace(rpc={"transport_url": url, "call_timeout": 5.0,
                                          "max_deliveries": 3})


@pytest.fixture
def transport(rpc_settings):
    transport = rpc.get_transport(rpc_settings.rpc)
    yield transport
    transport.cleanup()
