"""Virt drivers: the hypervisor behind a compute worker (see driver.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fabric.config import Settings
    from fabric.virt.driver import ComputeDriver


def load_driver(settings: Settings) -> ComputeDriver:
    """The driver ``settings.compute.driver`` names, not yet connected (call init_host)."""
    if settings.compute.driver == "libvirt":
        from fabric.virt.libvirt.driver import LibvirtDriver

        return LibvirtDriver(settings)
    from fabric.virt.fake.driver import FakeDriver

    return FakeDriver.from_settings(settings)
