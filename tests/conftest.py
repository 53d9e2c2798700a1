"""Shared fixtures. Each fixture module cleans up everything it creates."""

import pytest

from fabric import rpc

pytest_plugins = ["tests.fixtures.databases", "tests.fixtures.netns", "tests.fixtures.processes",
                  "tests.fixtures.rabbitmq", "tests.fixtures.api"]


@pytest.fixture
def transport(settings):
    """The RPC transport of the test's own ``settings`` fixture (a memory:// broker, or a RabbitMQ
    vhost, as the test module chooses), cleaned up after the test."""
    transport = rpc.get_transport(settings.rpc)
    yield transport
    transport.cleanup()
