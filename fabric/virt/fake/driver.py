"""An in-memory hypervisor: real state machine, no guests, no threads.

Good enough to run hundreds of compute workers in one process: every guest is
a small record, every call is a few dict operations under one lock (no thread
or timer per guest). Tests drive the failures a real host has:

- ``fail_next(action, error)`` makes the next ``action`` (``"spawn"``,
  ``"destroy"``, ...) raise ``error`` once;
- ``kill(uuid)`` stops a guest behind fabric's back (as if QEMU died);
- ``calls`` counts the actions performed, per action name.
"""

from __future__ import annotations

import collections
import threading
import time

from fabric.exception import GuestExists, GuestNotFound, GuestStateInvalid, HypervisorError
from fabric.virt.driver import (
    ComputeDriver,
    GuestInfo,
    GuestSpec,
    HostResources,
    NetworkInterface,
    PowerState,
)


class _FakeGuest:
    __slots__ = ("spec", "state", "interfaces", "console")

    def __init__(self, spec: GuestSpec) -> None:
        self.spec = spec
        self.state = PowerState.RUNNING
        self.interfaces = {vif.mac: vif for vif in spec.interfaces}
        self.console: list[str] = []


class FakeDriver(ComputeDriver):
    """Fake hypervisor with configurable capacity (settings.compute.fake_*)."""

    hypervisor_type = "fake"

    def __init__(self, vcpus: int = 16, memory_mb: int = 65536, disk_gb: int = 1024,
                 hostname: str = "fake-host", spawn_seconds: float = 0.0) -> None:
        self.capacity = (vcpus, memory_mb, disk_gb)
        self.hostname = hostname
        self.spawn_seconds = spawn_seconds
        self._guests: dict[str, _FakeGuest] = {}
        self._failures: dict[str, list[Exception]] = collections.defaultdict(list)
        self._lock = threading.Lock()
        self.calls: collections.Counter[str] = collections.Counter()

    @classmethod
    def from_settings(cls, settings) -> FakeDriver:
        c = settings.compute
        return cls(c.fake_vcpus, c.fake_memory_mb, c.fake_disk_gb, settings.default.host, c.fake_spawn_seconds)

    def init_host(self, host: str) -> None:
        self.hostname = host

    # --- test hooks ----------------------------------------------------

    def fail_next(self, action: str, error: Exception | None = None) -> None:
        """Make the next call of ``action`` raise ``error`` (HypervisorError by default)."""
        self._failures[action].append(error or HypervisorError(
            host=self.hostname, action=action, instance="*", reason="injected failure"))

    def kill(self, uuid: str) -> None:
        """The guest stops behind fabric's back (its QEMU died)."""
        self._guest(uuid).state = PowerState.SHUTDOWN

    # --- helpers -------------------------------------------------------

    def _enter(self, action: str) -> None:
        self.calls[action] += 1
        pending = self._failures.get(action)
        if pending:
            raise pending.pop(0)

    def _guest(self, uuid: str) -> _FakeGuest:
        guest = self._guests.get(uuid)
        if guest is None:
            raise GuestNotFound(instance=uuid, host=self.hostname)
        return guest

    def _require(self, guest: _FakeGuest, action: str, *accepted: PowerState) -> None:
        if guest.state not in accepted:
            raise GuestStateInvalid(action=action, instance=guest.spec.uuid, state=guest.state.name.lower(),
                                    accepted=" or ".join(s.name.lower() for s in accepted))

    def _transition(self, uuid: str, action: str, accepted: tuple[PowerState, ...], target: PowerState) -> None:
        with self._lock:
            self._enter(action)
            guest = self._guest(uuid)
            if guest.state == target and action in ("power_off", "power_on"):
                return
            self._require(guest, action, *accepted)
            guest.state = target
            guest.console.append(f"{action}\n")

    # --- lifecycle -----------------------------------------------------

    def spawn(self, spec: GuestSpec) -> None:
        spec.validate()
        if self.spawn_seconds:
            time.sleep(self.spawn_seconds)  # a boot's duration (a green sleep under eventlet)
        with self._lock:
            self._enter("spawn")
            if spec.uuid in self._guests:
                raise GuestExists(instance=spec.uuid, host=self.hostname)
            guest = _FakeGuest(spec)
            guest.console.append(f"fake guest {spec.uuid} booted\n")
            self._guests[spec.uuid] = guest

    def destroy(self, uuid: str, graceful_timeout: float = 0) -> None:
        with self._lock:
            self._enter("destroy")
            self._guests.pop(uuid, None)

    def reboot(self, uuid: str, hard: bool = False, timeout: float = 30) -> None:
        self._transition(uuid, "reboot", (PowerState.RUNNING, PowerState.SHUTDOWN, PowerState.CRASHED),
                         PowerState.RUNNING)

    def power_off(self, uuid: str, timeout: float = 0) -> None:
        self._transition(uuid, "power_off", (PowerState.RUNNING, PowerState.PAUSED, PowerState.CRASHED),
                         PowerState.SHUTDOWN)

    def power_on(self, uuid: str) -> None:
        self._transition(uuid, "power_on", (PowerState.SHUTDOWN, PowerState.CRASHED), PowerState.RUNNING)

    def pause(self, uuid: str) -> None:
        self._transition(uuid, "pause", (PowerState.RUNNING,), PowerState.PAUSED)

    def unpause(self, uuid: str) -> None:
        self._transition(uuid, "unpause", (PowerState.PAUSED,), PowerState.RUNNING)

    def suspend(self, uuid: str) -> None:
        self._transition(uuid, "suspend", (PowerState.RUNNING,), PowerState.SUSPENDED)

    def resume(self, uuid: str) -> None:
        self._transition(uuid, "resume", (PowerState.SUSPENDED,), PowerState.RUNNING)

    # --- inspection ----------------------------------------------------

    def get_info(self, uuid: str) -> GuestInfo:
        guest = self._guest(uuid)
        return GuestInfo(uuid, guest.state, guest.spec.vcpus, guest.spec.memory_mb, None)

    def list_instances(self) -> list[str]:
        return list(self._guests)

    def instance_exists(self, uuid: str) -> bool:
        return uuid in self._guests

    def get_power_states(self) -> dict[str, PowerState]:
        return {uuid: guest.state for uuid, guest in list(self._guests.items())}

    def get_console_output(self, uuid: str, max_bytes: int = 65536) -> str:
        return "".join(self._guest(uuid).console)[-max_bytes:]

    def get_available_resource(self) -> HostResources:
        guests = list(self._guests.values())
        vcpus, memory_mb, disk_gb = self.capacity
        return HostResources(
            hypervisor_type=self.hypervisor_type, hypervisor_hostname=self.hostname,
            vcpus=vcpus, memory_mb=memory_mb, disk_gb=disk_gb,
            vcpus_used=sum(g.spec.vcpus for g in guests),
            memory_mb_used=sum(g.spec.memory_mb for g in guests),
            disk_gb_used=sum(g.spec.disk_gb for g in guests),
            running_vms=sum(1 for g in guests if g.state == PowerState.RUNNING),
        )

    # --- network -------------------------------------------------------

    def attach_interface(self, uuid: str, interface: NetworkInterface) -> None:
        interface.validate(uuid)
        with self._lock:
            self._enter("attach_interface")
            self._guest(uuid).interfaces[interface.mac] = interface

    def detach_interface(self, uuid: str, interface: NetworkInterface) -> None:
        with self._lock:
            self._enter("detach_interface")
            self._guest(uuid).interfaces.pop(interface.mac, None)

    def interfaces(self, uuid: str) -> list[NetworkInterface]:
        """The guest's NICs (a test helper)."""
        return list(self._guest(uuid).interfaces.values())
