"""Helpers for the network functional tests: simulated hosts running the Linux driver."""

from __future__ import annotations

import pytest

from fabric.config import Settings
from fabric.network.drivers.linux import LinuxDriver


def host_settings(name: str, tunnel: str, data_dir: str, **network) -> Settings:
    return Settings().replace(default={"host": name, "data_dir": data_dir},
                              network={"driver": "linux", "tunnel_address": tunnel, **network})


@pytest.fixture
def simulated_host(netns, tmp_path):
    """Factory: ``driver = simulated_host(ns, "h1", "192.168.77.1")`` -> LinuxDriver in ``ns``.

    Every driver made here has its DHCP servers stopped and kernel objects removed afterwards.
    """
    made: list[LinuxDriver] = []

    def make(ns: str, name: str, tunnel: str, **network) -> LinuxDriver:
        driver = LinuxDriver(host_settings(name, tunnel, str(tmp_path / name), **network), netns=ns)
        made.append(driver)
        return driver

    yield make
    for driver in made:
        try:
            driver.stop()
        except Exception:  # noqa: BLE001 - the namespace teardown removes the rest
            pass
