"""Network drivers: ``linux`` (real kernel objects) and ``fake`` (bookkeeping only)."""

from __future__ import annotations

from fabric.config import Settings
from fabric.network.drivers.base import NetworkDriver


def load(settings: Settings, netns: str | None = None, state_dir: str | None = None) -> NetworkDriver:
    """The driver ``settings.network.driver`` names, for namespace ``netns``
    (default: ``settings.network.namespace``, empty meaning the process's own).
    """
    if settings.network.driver == "fake":
        from fabric.network.drivers.fake import FakeDriver

        return FakeDriver(settings)
    from fabric.network.drivers.linux import LinuxDriver

    return LinuxDriver(settings, netns=netns if netns is not None else (settings.network.namespace or None),
                       state_dir=state_dir)
