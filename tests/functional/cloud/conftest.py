"""The whole-cloud fixtures (tests/fixtures/cloud.py) for the tests in this folder."""

from tests.fixtures.cloud import cloud, guest, projects  # noqa: F401 - fixtures
