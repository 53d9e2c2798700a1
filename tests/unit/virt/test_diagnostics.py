"""get_diagnostics on the fake and the libvirt (test:///) drivers, and through the compute
manager's RPC handler; the base driver's answer for drivers that keep no counters."""

from __future__ import annotations

import pytest

from fabric.exception import GuestNotFound, NotSupported
from fabric.virt.fake import FakeDriver
from tests.unit.virt.conftest import make_spec
from tests.unit.virt.test_driver_contract import MISSING


def test_diagnostics_give_the_guests_memory_and_vcpus(driver):
    spec = make_spec(1, vcpus=2, memory_mb=256)
    driver.spawn(spec)
    found = driver.get_diagnostics(spec.uuid)
    assert found["memory"] == 256 * 1024
    assert {"cpu0_time", "cpu1_time"} <= set(found) and "cpu2_time" not in found
    with pytest.raises(GuestNotFound, match=MISSING):
        driver.get_diagnostics(MISSING)


def test_the_fake_counts_console_lines_and_nics():
    driver = FakeDriver(hostname="h")
    spec = make_spec(3)
    driver.spawn(spec)
    driver.reboot(spec.uuid)
    driver.power_off(spec.uuid)
    found = driver.get_diagnostics(spec.uuid)
    assert (found["state"], found["console_lines"]) == ("shutdown", 3)  # booted, reboot, power_off
    assert found["vnet0_rx"] == 0 and "vnet1_rx" not in found


def test_a_driver_without_counters_says_so():
    class Bare(FakeDriver):
        get_diagnostics = FakeDriver.__mro__[1].get_diagnostics  # the base class's

    driver = Bare(hostname="h")
    with pytest.raises(NotSupported, match="keeps no guest counters") as err:
        driver.get_diagnostics(MISSING)
    assert err.value.code == 501
