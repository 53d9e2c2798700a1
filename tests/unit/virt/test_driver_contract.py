"""The promises of fabric.virt.driver, checked on the fake and the libvirt (test:///) drivers."""

from __future__ import annotations

import pytest

from fabric.exception import GuestExists, GuestNotFound, GuestStateInvalid, InvalidGuestSpec
from fabric.virt.driver import BootImage, NetworkInterface, PowerState
from tests.unit.virt.conftest import make_spec, nic_macs

MISSING = "00000000-0000-4000-8000-000000000000"


def test_spawn_runs_the_guest_and_lists_it(driver):
    spec = make_spec(1, vcpus=2, memory_mb=256)
    driver.spawn(spec)
    info = driver.get_info(spec.uuid)
    assert info.power_state == PowerState.RUNNING
    assert (info.vcpus, info.memory_mb) == (2, 256)
    assert driver.list_instances() == [spec.uuid]
    assert driver.instance_exists(spec.uuid)
    assert driver.get_power_states() == {spec.uuid: PowerState.RUNNING}


def test_spawn_twice_is_refused_and_keeps_the_first(driver):
    spec = make_spec(1)
    driver.spawn(spec)
    with pytest.raises(GuestExists, match=spec.uuid):
        driver.spawn(spec)
    assert driver.get_info(spec.uuid).power_state == PowerState.RUNNING


@pytest.mark.parametrize("change, field", [
    ({"vcpus": 0}, "vcpus"),
    ({"memory_mb": 1}, "memory_mb"),
    ({"uuid": "not-a-uuid"}, "uuid"),
    ({"image": BootImage()}, "image"),
    ({"interfaces": (NetworkInterface(id="p", mac="zz:00:00:00:00:00", bridge="br"),)}, "mac"),
    ({"interfaces": (NetworkInterface(id="p", mac="52:54:00:00:00:01"),)}, "bridge/tap"),
    ({"interfaces": (NetworkInterface(id="p", mac="52:54:00:00:00:01", tap="a-name-longer-than-15"),)}, "tap"),
])
def test_bad_spec_names_the_field_and_creates_nothing(driver, change, field):
    spec = make_spec(1, **change)
    with pytest.raises(InvalidGuestSpec) as err:
        driver.spawn(spec)
    assert err.value.fields["field"] == field
    assert driver.list_instances() == []


def test_destroy_removes_the_guest_and_is_idempotent(driver):
    spec = make_spec(1)
    driver.spawn(spec)
    driver.destroy(spec.uuid)
    assert driver.list_instances() == []
    driver.destroy(spec.uuid)  # absent: no error
    with pytest.raises(GuestNotFound):
        driver.get_info(spec.uuid)


@pytest.mark.parametrize("action", ["reboot", "power_off", "power_on", "pause", "unpause", "suspend",
                                    "resume", "get_info", "get_console_output"])
def test_actions_on_an_unknown_guest_raise_not_found(driver, action):
    with pytest.raises(GuestNotFound, match=MISSING):
        getattr(driver, action)(MISSING)


def test_power_off_and_on(driver):
    spec = make_spec(1)
    driver.spawn(spec)
    driver.power_off(spec.uuid)
    assert driver.get_info(spec.uuid).power_state == PowerState.SHUTDOWN
    driver.power_off(spec.uuid)  # already off: no error
    driver.power_on(spec.uuid)
    assert driver.get_info(spec.uuid).power_state == PowerState.RUNNING
    driver.power_on(spec.uuid)  # already on: no error


def test_pause_unpause_and_state_guards(driver):
    spec = make_spec(1)
    driver.spawn(spec)
    with pytest.raises(GuestStateInvalid, match="unpause"):
        driver.unpause(spec.uuid)
    driver.pause(spec.uuid)
    assert driver.get_info(spec.uuid).power_state == PowerState.PAUSED
    with pytest.raises(GuestStateInvalid, match="paused"):
        driver.reboot(spec.uuid)
    driver.unpause(spec.uuid)
    assert driver.get_info(spec.uuid).power_state == PowerState.RUNNING


def test_suspend_resume(driver):
    spec = make_spec(1)
    driver.spawn(spec)
    with pytest.raises(GuestStateInvalid):
        driver.resume(spec.uuid)
    driver.suspend(spec.uuid)
    assert driver.get_info(spec.uuid).power_state == PowerState.SUSPENDED
    with pytest.raises(GuestStateInvalid, match="suspended"):
        driver.power_on(spec.uuid)
    driver.resume(spec.uuid)
    assert driver.get_info(spec.uuid).power_state == PowerState.RUNNING
    driver.suspend(spec.uuid)
    driver.destroy(spec.uuid)  # a suspended guest's saved state goes too
    assert driver.list_instances() == []


@pytest.mark.parametrize("hard", [False, True])
def test_reboot_leaves_it_running_and_starts_a_stopped_guest(driver, hard):
    spec = make_spec(1)
    driver.spawn(spec)
    driver.reboot(spec.uuid, hard=hard, timeout=5)
    assert driver.get_info(spec.uuid).power_state == PowerState.RUNNING
    driver.power_off(spec.uuid)
    driver.reboot(spec.uuid, hard=hard, timeout=5)
    assert driver.get_info(spec.uuid).power_state == PowerState.RUNNING


def test_available_resource_counts_the_guests(driver):
    empty = driver.get_available_resource()
    assert empty.vcpus == 4 and empty.memory_mb == 8192
    assert (empty.vcpus_used, empty.memory_mb_used, empty.running_vms) == (0, 0, 0)
    a, b = make_spec(1, vcpus=2, memory_mb=512, disk_gb=3), make_spec(2, vcpus=1, memory_mb=256, disk_gb=2)
    driver.spawn(a)
    driver.spawn(b)
    driver.power_off(b.uuid)
    used = driver.get_available_resource()
    assert (used.vcpus_used, used.memory_mb_used, used.disk_gb_used, used.running_vms) == (3, 768, 5, 1)


def test_detach_interface_on_a_stopped_guest(driver):
    spec = make_spec(1)
    (own,) = [nic.mac for nic in spec.interfaces]
    driver.spawn(spec)
    driver.power_off(spec.uuid)
    extra = NetworkInterface(id="extra", mac="52:54:00:aa:bb:cc", tap="fabtap1")
    driver.attach_interface(spec.uuid, extra)
    assert nic_macs(driver, spec.uuid) == [own, extra.mac]
    driver.attach_interface(spec.uuid, extra)  # same MAC again: no error, no second NIC
    assert nic_macs(driver, spec.uuid) == [own, extra.mac]
    driver.detach_interface(spec.uuid, extra)
    assert nic_macs(driver, spec.uuid) == [own]  # only that NIC went
    driver.detach_interface(spec.uuid, extra)  # not attached: no error
    assert nic_macs(driver, spec.uuid) == [own]
    with pytest.raises(InvalidGuestSpec):
        driver.attach_interface(spec.uuid, NetworkInterface(id="bad", mac="nope", bridge="br"))
    assert nic_macs(driver, spec.uuid) == [own]
    driver.power_on(spec.uuid)  # the definition it starts from has the one NIC
    assert driver.get_info(spec.uuid).power_state == PowerState.RUNNING
    assert nic_macs(driver, spec.uuid) == [own]
