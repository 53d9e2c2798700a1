"""The simulated hosts of the network tests (a namespace running the Linux driver)."""

from tests.functional.network.conftest import simulated_host  # noqa: F401 - fixture
