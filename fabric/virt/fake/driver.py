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
import shutil
import threading
import time
from pathlib import Path

from fabric.exception import GuestExists, GuestNotFound, GuestStateInvalid, HypervisorError
from fabric.virt.driver import (
    ComputeDriver,
    GuestInfo,
    GuestSpec,
    HostResources,
    NetworkInterface,
    PowerState,
    VolumeDisk,
)


class _FakeGuest:
    __slots__ = ("spec", "state", "interfaces", "console", "disk", "volumes")

    def __init__(self, spec: GuestSpec) -> None:
        self.spec = spec
        self.state = PowerState.RUNNING
        self.interfaces = {vif.mac: vif for vif in spec.interfaces}
        self.volumes = {disk.volume_id: disk for disk in spec.volumes}
        self.console: list[str] = []
        #: The guest's disk file (a copy of its image's), when the driver keeps disks.
        self.disk: Path | None = None


class FakeDriver(ComputeDriver):
    """Fake hypervisor with configurable capacity (settings.compute.fake_*)."""

    hypervisor_type = "fake"

    def __init__(self, vcpus: int = 16, memory_mb: int = 65536, disk_gb: int = 1024,
                 hostname: str = "fake-host", spawn_seconds: float = 0.0, disk_dir: str | Path | None = None) -> None:
        """``disk_dir``: where guests' disks live (each a copy of its disk image's file, so a
        move or snapshot carries real bytes); None keeps no disks (scale tests)."""
        self.capacity = (vcpus, memory_mb, disk_gb)
        self.hostname = hostname
        self.spawn_seconds = spawn_seconds
        self.disk_dir = Path(disk_dir) if disk_dir is not None else None
        self._guests: dict[str, _FakeGuest] = {}
        #: Guests set aside by a move (migrate_disk_and_power_off) until it is confirmed or reverted.
        self._set_aside: dict[str, _FakeGuest] = {}
        self._failures: dict[str, list[Exception]] = collections.defaultdict(list)
        self._lock = threading.Lock()
        self.calls: collections.Counter[str] = collections.Counter()

    @classmethod
    def from_settings(cls, settings) -> FakeDriver:
        c = settings.compute
        return cls(c.fake_vcpus, c.fake_memory_mb, c.fake_disk_gb, settings.default.host, c.fake_spawn_seconds,
                   disk_dir=Path(settings.default.data_dir) / "fake-disks")

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
            guest.disk = self._copy_disk(spec.image.disk_path, spec.uuid)
            guest.console.append(f"fake guest {spec.uuid} booted\n")
            self._guests[spec.uuid] = guest

    def _copy_disk(self, source: str | None, uuid: str) -> Path | None:
        """The guest's own copy of ``source`` in :attr:`disk_dir` (None without either)."""
        if self.disk_dir is None or not source:
            return None
        self.disk_dir.mkdir(parents=True, exist_ok=True)
        target = self.disk_dir / f"{uuid}.disk"
        shutil.copyfile(source, target)
        return target

    def destroy(self, uuid: str, graceful_timeout: float = 0) -> None:
        with self._lock:
            self._enter("destroy")
            guest = self._guests.pop(uuid, None)
            if guest is not None and guest.disk is not None:
                guest.disk.unlink(missing_ok=True)

    # --- moves and snapshots -------------------------------------------

    def migrate_disk_and_power_off(self, uuid: str, timeout: float = 0) -> str | None:
        with self._lock:
            self._enter("migrate_disk_and_power_off")
            guest = self._set_aside.get(uuid)
            if guest is None:
                guest = self._guest(uuid)
                del self._guests[uuid]
                guest.state = PowerState.SHUTDOWN
                if guest.disk is not None:  # out of the way of a new guest on this host
                    guest.disk = guest.disk.rename(guest.disk.with_suffix(".resize"))
                self._set_aside[uuid] = guest
            return str(guest.disk) if guest.disk is not None else None

    def finish_migration(self, spec: GuestSpec, disk_path: str | None, power_on: bool) -> None:
        spec.validate()
        with self._lock:
            self._enter("finish_migration")
            if spec.uuid in self._guests:
                raise GuestExists(instance=spec.uuid, host=self.hostname)
            guest = _FakeGuest(spec)
            guest.disk = self._copy_disk(disk_path or spec.image.disk_path, spec.uuid)
            guest.state = PowerState.RUNNING if power_on else PowerState.SHUTDOWN
            guest.console.append(f"fake guest {spec.uuid} moved here\n")
            self._guests[spec.uuid] = guest

    def confirm_migration(self, uuid: str) -> None:
        with self._lock:
            self._enter("confirm_migration")
            guest = self._set_aside.pop(uuid, None)
            if guest is not None and guest.disk is not None:
                guest.disk.unlink(missing_ok=True)

    def finish_revert_migration(self, uuid: str, power_on: bool) -> None:
        with self._lock:
            self._enter("finish_revert_migration")
            guest = self._set_aside.pop(uuid, None)
            if guest is None:
                self._guest(uuid)  # GuestNotFound unless already back
                return
            if guest.disk is not None:
                guest.disk = guest.disk.rename(guest.disk.with_suffix(".disk"))
            guest.state = PowerState.RUNNING if power_on else PowerState.SHUTDOWN
            self._guests[uuid] = guest

    def snapshot(self, uuid: str, target: str, disk_format: str) -> None:
        with self._lock:
            self._enter("snapshot")
            guest = self._guest(uuid)
            if guest.disk is not None:
                shutil.copyfile(guest.disk, target)
            else:
                Path(target).write_bytes(f"fake disk of {uuid}\n".encode())

    def set_aside(self) -> list[str]:
        """The guests a move set aside (a test helper)."""
        return list(self._set_aside)

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

    def get_diagnostics(self, uuid: str) -> dict[str, int | float | str]:
        """The guest's fake counters: its memory and vCPUs as spawned, one set of NIC counters per
        interface (zero: no traffic is faked), and how many lines its console holds (one per
        boot and per power action)."""
        with self._lock:
            guest = self._guest(uuid)
            out: dict[str, int | float | str] = {"state": guest.state.name.lower(),
                                                 "memory": guest.spec.memory_mb * 1024,
                                                 "console_lines": len(guest.console)}
            out.update({f"cpu{i}_time": 0 for i in range(guest.spec.vcpus)})
            for index, _mac in enumerate(guest.interfaces):
                out.update({f"vnet{index}_{name}": 0 for name in ("rx", "rx_packets", "tx", "tx_packets")})
        return out

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

    # --- volumes -------------------------------------------------------

    def attach_volume(self, uuid: str, disk: VolumeDisk) -> None:
        disk.validate(uuid)
        with self._lock:
            self._enter("attach_volume")
            guest = self._guest(uuid)
            if disk.volume_id in guest.volumes:
                return
            if disk.device in {d.device for d in guest.volumes.values()}:
                raise GuestStateInvalid(action="attach a volume to", instance=uuid,
                                        state=f"using {disk.device}", accepted=f"{disk.device} free")
            guest.volumes[disk.volume_id] = disk

    def detach_volume(self, uuid: str, volume_id: str) -> None:
        with self._lock:
            self._enter("detach_volume")
            self._guest(uuid).volumes.pop(volume_id, None)

    def volumes(self, uuid: str) -> list[VolumeDisk]:
        """The guest's attached volumes (a test helper)."""
        return list(self._guest(uuid).volumes.values())

    def interfaces(self, uuid: str) -> list[NetworkInterface]:
        """The guest's NICs (a test helper)."""
        return list(self._guest(uuid).interfaces.values())
