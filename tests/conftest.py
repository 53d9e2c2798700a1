"""Shared fixtures. Each fixture module cleans up everything it creates."""

pytest_plugins = ["tests.fixtures.databases", "tests.fixtures.netns", "tests.fixtures.processes",
                  "tests.fixtures.rabbitmq", "tests.fixtures.api"]
