"""Shared fixtures. Each fixture module cleans up everything it creates."""

pytest_plugins = ["tests.fixtures.databases"]
