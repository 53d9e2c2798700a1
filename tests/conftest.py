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


#: Functional test directories whose tests share a session or package fixture that is expensive
#: to build (a two-host cloud of real guests, an objectstore stack, a browser, a broker cluster).
SHARED_FIXTURE_DIRECTORIES = ("cloud", "objectstore", "dashboard", "rpc")


def pytest_collection_modifyitems(config, items):
    """With pytest-xdist (``tools/test`` runs ``--dist loadgroup``), keep the tests that share
    an expensive fixture on one worker: each of :data:`SHARED_FIXTURE_DIRECTORIES` is one
    group, every other test module another."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        parts = item.path.relative_to(config.rootpath).parts
        shared = len(parts) > 3 and parts[1] == "functional" and parts[2] in SHARED_FIXTURE_DIRECTORIES
        item.add_marker(pytest.mark.xdist_group("/".join(parts[:3] if shared else parts)))
