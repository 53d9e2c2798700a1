"""Unit-test fixtures for fabric.rpc: a private memory:// broker per test."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

import eventlet
import pytest

from fabric import config, rpc


def wait_for(condition: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    """Yield to the hub until ``condition()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        eventlet.sleep(0.001)


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
