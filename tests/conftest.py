"""Shared fixtures. Each fixture module cleans up everything it creates."""

import collections

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


#: The groups that take longest, longest first (from the whole suite's ``--durations``): they
#: start first, so the run does not end with one worker alone on a long group that happened
#: to come last. Update when a new long group appears.
LONGEST_GROUPS = (
    "tests/functional/cloud",
    "tests/functional/api/test_tempest_interop.py",
    "tests/unit/api/test_openapi_fuzz_servers.py",
    "tests/functional/dashboard",
    "tests/functional/rpc",
    "tests/functional/objectstore",
    "tests/functional/api/test_tempest_identity.py",
)


def group_of(config, item) -> str:
    """The xdist group of ``item``: its shared-fixture directory, or its module."""
    parts = item.path.relative_to(config.rootpath).parts
    shared = len(parts) > 3 and parts[1] == "functional" and parts[2] in SHARED_FIXTURE_DIRECTORIES
    return "/".join(parts[:3] if shared else parts)


def pytest_collection_modifyitems(config, items):
    """With pytest-xdist (``tools/test`` runs ``--dist loadgroup --no-loadscope-reorder``), keep
    the tests that share an expensive fixture on one worker: each of
    :data:`SHARED_FIXTURE_DIRECTORIES` is one group, every other test module another. Groups
    are handed out in the order of the items, longest first: :data:`LONGEST_GROUPS`, then
    the other groups with slow tests, then functional groups, then the rest, each by its number
    of tests (the order is the same in every worker, as xdist requires)."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    groups = {item.nodeid: group_of(config, item) for item in items}
    size = collections.Counter(groups.values())
    slow = {groups[item.nodeid] for item in items if item.get_closest_marker("slow")}

    def rank(item) -> tuple:
        group = groups[item.nodeid]
        if group in LONGEST_GROUPS:
            return (0, LONGEST_GROUPS.index(group), group)
        tier = 1 if group in slow else 2 if group.startswith("tests/functional/") else 3
        return (tier, -size[group], group)

    items.sort(key=rank)  # stable: a group keeps its tests' own order
    for item in items:
        item.add_marker(pytest.mark.xdist_group(groups[item.nodeid]))
