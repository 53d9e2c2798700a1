"""Shared fixtures. Each fixture module cleans up everything it creates."""

import collections

import pytest

from fabric import log, rpc

pytest_plugins = ["tests.fixtures.databases", "tests.fixtures.netns", "tests.fixtures.processes",
                  "tests.fixtures.rabbitmq", "tests.fixtures.api"]


@pytest.fixture(autouse=True)
def _fabric_logging_ends_with_the_test(caplog):
    """A test that calls :func:`fabric.log.setup` (directly, or through a launcher's ``main``)
    leaves logging as it found it, through :func:`fabric.log.remove`:

    - no handler: its handler writes to the ``sys.stderr`` of that test, which pytest's
      capture replaced and closes after it, and every later log record would print a
      ``--- Logging error ---`` traceback instead;
    - no level: a root logger left at INFO (or WARNING) by an earlier test decides whether a
      later test's ``caplog`` sees INFO records, and which tests ran earlier in a worker
      changes from run to run.

    It asks for ``caplog`` only to be torn down before it: a test may set a level with
    ``caplog`` and then call ``setup``, which records that level as the one to restore, and
    ``caplog`` must restore the level from before the test after that. (The other way round,
    ``setup`` and then ``caplog.set_level`` on the same logger, would leave ``setup``'s level:
    set levels with ``caplog`` first.)"""
    yield
    log.remove()


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


#: Long modules whose tests run once per database server, each server's on fixtures of its own:
#: each server's tests are a group of their own, so that two workers can run them at once. (Not
#: the OpenAPI fuzz on the server databases: its second backend sends again the cases the first
#: drew, in the same process, for a sixth less CPU than both drawing them.)
SPLIT_BY_BACKEND = ("tests/functional/ipam/test_ipam_workers.py",)
BACKENDS = ("postgresql", "mariadb")


def group_of(config, item) -> str:
    """The xdist group of ``item``: its shared-fixture directory, or its module (with the
    database server its test runs on, for :data:`SPLIT_BY_BACKEND`)."""
    parts = item.path.relative_to(config.rootpath).parts
    shared = len(parts) > 3 and parts[1] == "functional" and parts[2] in SHARED_FIXTURE_DIRECTORIES
    group = "/".join(parts[:3] if shared else parts)
    if group in SPLIT_BY_BACKEND:
        params = getattr(getattr(item, "callspec", None), "params", {})
        backend = next((value for value in params.values() if value in BACKENDS), None)
        if backend is not None:
            return f"{group}:{backend}"  # no "]" or "@": xdist reads the group after the last "@" past any "]"
    return group


# First: xdist's worker reads the groups in a hook of its own (adding them to the node ids), and,
# registered after this file, it would otherwise run before the groups are set (and every test
# went to any worker, fixtures shared by a group built once per worker).
@pytest.hookimpl(tryfirst=True)
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


@pytest.hookimpl(optionalhook=True)  # a run without xdist (-p no:xdist) has no such hook
def pytest_xdist_node_collection_finished(node, ids):
    """Stop a ``--dist loadgroup`` run whose groups did not take: xdist's worker adds each test's
    group to its node id; a pytest that ignores that (9.2, see setup.py) would spread a group's
    tests, and the fixtures they share, over every worker without a word."""
    if node.config.getoption("dist") == "loadgroup" and ids and not any("@" in ident for ident in ids):
        pytest.exit(f"pytest-xdist's groups were not applied on {node.gateway.id} (e.g. {ids[0]}): this "
                    "pytest and pytest-xdist do not work together (see setup.py)", returncode=4)
