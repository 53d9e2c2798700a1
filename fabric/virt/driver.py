"""The virt driver interface: what the compute manager asks of a hypervisor.

A driver manages the guests of ONE host. It knows nothing of the database,
the message bus or instance states: it turns a :class:`GuestSpec` into a
guest and reports what the hypervisor says. The compute manager owns
vm_state/task_state; the driver only reports :class:`PowerState`.

Promises every driver keeps:

- Guests are named by instance UUID; a driver lists and acts only on the
  guests it created (another tool's guests on the same hypervisor are ignored).
- ``destroy`` is idempotent: destroying an absent guest succeeds, and it
  removes everything the driver created for the guest (disks, console log).
- Actions on an unknown guest raise :class:`~fabric.exception.GuestNotFound`;
  an action the guest's power state forbids raises
  :class:`~fabric.exception.GuestStateInvalid` and changes nothing; a
  hypervisor failure raises :class:`~fabric.exception.HypervisorError`; a
  hypervisor that cannot be reached raises
  :class:`~fabric.exception.HypervisorUnavailable`.
- No call blocks the eventlet hub (a driver on a blocking C library runs it
  off the hub).
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import re
from typing import Literal

from fabric.exception import GuestNotFound, HypervisorError, InvalidGuestSpec, NotSupported

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_DISK_NAME = re.compile(r"^vd[a-z]$")


class PowerState(enum.IntEnum):
    """What the hypervisor says a guest is doing (values as in Nova)."""

    NOSTATE = 0
    RUNNING = 1
    PAUSED = 3
    SHUTDOWN = 4
    CRASHED = 6
    SUSPENDED = 7


@dataclasses.dataclass(frozen=True)
class NetworkInterface:
    """One guest NIC: on a bridge (``bridge``) or a tap the network worker made (``tap``).

    Exactly one of ``bridge`` and ``tap`` is set. ``id`` is the port/endpoint
    id the network worker and IPAM know the interface by.
    """

    id: str
    mac: str
    bridge: str | None = None
    tap: str | None = None
    mtu: int | None = None

    def validate(self, instance: str) -> None:
        """Raise InvalidGuestSpec naming the first bad field."""
        if not _MAC.match(self.mac or ""):
            raise InvalidGuestSpec(instance=instance, field="mac", value=self.mac,
                                   reason="expected six lower-case hex pairs, e.g. 52:54:00:12:34:56")
        if (self.bridge is None) == (self.tap is None):
            raise InvalidGuestSpec(instance=instance, field="bridge/tap", value=(self.bridge, self.tap),
                                   reason="exactly one of bridge and tap must be given")
        name = self.bridge or self.tap
        if not _IFNAME.match(name or ""):
            raise InvalidGuestSpec(instance=instance, field="bridge" if self.bridge else "tap", value=name,
                                   reason="expected an interface name of 1-15 letters, digits, '_', '.', '-'")
        if self.mtu is not None and not 68 <= self.mtu <= 65535:
            raise InvalidGuestSpec(instance=instance, field="mtu", value=self.mtu, reason="expected 68..65535")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> NetworkInterface:
        return cls(**{f.name: data.get(f.name) for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class VolumeDisk:
    """One volume as a guest disk: reached over the network as ``connection_info`` says (the
    volume service's answer, e.g. ``{"driver_volume_type": "nbd", "data": {"host", "port",
    "export_name", "format"}}``), on the guest's bus as ``device`` (``vdb``...). The guest
    sees ``volume_id`` (its first 20 characters) as the disk's serial number."""

    volume_id: str
    device: str
    connection_info: dict

    def validate(self, instance: str) -> None:
        """Raise InvalidGuestSpec naming the first bad field."""
        if not _DISK_NAME.match(self.device or ""):
            raise InvalidGuestSpec(instance=instance, field="volume.device", value=self.device,
                                   reason="expected vd followed by one letter, e.g. vdb")
        if not _UUID.match(self.volume_id or ""):
            raise InvalidGuestSpec(instance=instance, field="volume.volume_id", value=self.volume_id,
                                   reason="expected a lower-case UUID")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> VolumeDisk:
        return cls(volume_id=data["volume_id"], device=data["device"], connection_info=data["connection_info"])


@dataclasses.dataclass(frozen=True)
class BootImage:
    """What the guest boots: a disk image, or a kernel + initrd pair (direct boot).

    ``disk_path`` is a local image file (``disk_format`` qcow2 or raw); the
    driver never writes it: it boots an overlay on a cached copy. With
    ``kernel`` set the guest boots that kernel (and ``initrd``, ``cmdline``);
    a disk image may accompany it.
    """

    disk_path: str | None = None
    disk_format: Literal["qcow2", "raw"] = "qcow2"
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BootImage:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


@dataclasses.dataclass(frozen=True)
class GuestSpec:
    """Everything a driver needs to create one guest."""

    uuid: str
    name: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    image: BootImage
    interfaces: tuple[NetworkInterface, ...] = ()
    #: Attached volumes: a guest defined again (rebuild, move) keeps them.
    volumes: tuple[VolumeDisk, ...] = ()

    def validate(self) -> None:
        """Raise InvalidGuestSpec naming the first bad field and what is accepted."""
        if not _UUID.match(self.uuid or ""):
            raise InvalidGuestSpec(instance=self.uuid, field="uuid", value=self.uuid,
                                   reason="expected a lower-case UUID")
        for field, low in (("vcpus", 1), ("memory_mb", 16), ("disk_gb", 0)):
            value = getattr(self, field)
            if not isinstance(value, int) or value < low:
                raise InvalidGuestSpec(instance=self.uuid, field=field, value=value,
                                       reason=f"expected an integer >= {low}")
        image = self.image
        boots_from_volume = any(disk.device == "vda" for disk in self.volumes)
        if image.disk_path is None and image.kernel is None and not boots_from_volume:
            raise InvalidGuestSpec(instance=self.uuid, field="image", value=image.to_dict(),
                                   reason="expected a disk_path, a kernel, both, or a volume as vda")
        if image.disk_format not in ("qcow2", "raw"):
            raise InvalidGuestSpec(instance=self.uuid, field="image.disk_format", value=image.disk_format,
                                   reason="expected qcow2 or raw")
        if image.initrd and not image.kernel:
            raise InvalidGuestSpec(instance=self.uuid, field="image.initrd", value=image.initrd,
                                   reason="an initrd needs a kernel")
        macs = [vif.mac for vif in self.interfaces]
        if len(set(macs)) != len(macs):
            raise InvalidGuestSpec(instance=self.uuid, field="interfaces", value=macs,
                                   reason="MAC addresses must be distinct")
        for vif in self.interfaces:
            vif.validate(self.uuid)
        devices = [disk.device for disk in self.volumes]
        if len(set(devices)) != len(devices) or (image.disk_path and "vda" in devices):
            raise InvalidGuestSpec(instance=self.uuid, field="volumes", value=devices,
                                   reason="device names must be distinct (vda is the image's disk when there is one)")
        for disk in self.volumes:
            disk.validate(self.uuid)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["interfaces"] = [vif.to_dict() for vif in self.interfaces]
        data["volumes"] = [disk.to_dict() for disk in self.volumes]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> GuestSpec:
        return cls(
            uuid=data["uuid"], name=data.get("name", ""), vcpus=data["vcpus"],
            memory_mb=data["memory_mb"], disk_gb=data.get("disk_gb", 0),
            image=BootImage.from_dict(data["image"]),
            interfaces=tuple(NetworkInterface.from_dict(v) for v in data.get("interfaces", ())),
            volumes=tuple(VolumeDisk.from_dict(v) for v in data.get("volumes", ())),
        )


@dataclasses.dataclass(frozen=True)
class GuestInfo:
    """A guest as the hypervisor sees it. ``cpu_time_ns`` is None where stats are unavailable."""

    uuid: str
    power_state: PowerState
    vcpus: int
    memory_mb: int
    cpu_time_ns: int | None = None


@dataclasses.dataclass(frozen=True)
class HostResources:
    """This host's capacity and what its guests use (for the scheduler's reports)."""

    hypervisor_type: str
    hypervisor_hostname: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    vcpus_used: int
    memory_mb_used: int
    disk_gb_used: int
    running_vms: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class ComputeDriver(abc.ABC):
    """A hypervisor on one host. See the module docstring for the promises."""

    #: Reported in compute_nodes.hypervisor_type ("fake", "qemu", "kvm", "test").
    hypervisor_type: str = "unknown"

    def init_host(self, host: str) -> None:  # noqa: B027 - optional hook
        """Connect to the hypervisor; called once when the compute worker starts.

        Raises HypervisorUnavailable when it cannot be reached.
        """

    def cleanup_host(self) -> None:  # noqa: B027 - optional hook
        """Release connections and helper threads (guests keep running)."""

    # --- lifecycle -----------------------------------------------------

    @abc.abstractmethod
    def spawn(self, spec: GuestSpec) -> None:
        """Create the guest and start it; returns once the hypervisor runs it.

        Raises InvalidGuestSpec for a bad spec (nothing is created), GuestExists
        when a guest with this UUID exists, HypervisorError when creation fails
        (whatever was created for the guest is removed again).
        """

    @abc.abstractmethod
    def destroy(self, uuid: str, graceful_timeout: float = 0) -> None:
        """Stop the guest (ACPI first for up to ``graceful_timeout`` s) and remove it.

        Removes the definition, disks and console log. Absent guest: no error.
        """

    @abc.abstractmethod
    def reboot(self, uuid: str, hard: bool = False, timeout: float = 30) -> None:
        """Reboot: soft = ACPI shutdown then start (hard if it has not stopped
        within ``timeout`` s); hard = power cycle. A shut-off guest is started.

        Raises GuestNotFound; GuestStateInvalid when paused or suspended.
        """

    @abc.abstractmethod
    def power_off(self, uuid: str, timeout: float = 0) -> None:
        """Shut the guest off (ACPI first for up to ``timeout`` s, then forcibly).

        Already off: no error. Raises GuestNotFound.
        """

    @abc.abstractmethod
    def power_on(self, uuid: str) -> None:
        """Start a shut-off guest. Already running: no error.

        Raises GuestNotFound; GuestStateInvalid when paused or suspended.
        """

    @abc.abstractmethod
    def pause(self, uuid: str) -> None:
        """Freeze the guest's vCPUs in memory. Raises GuestStateInvalid unless running."""

    @abc.abstractmethod
    def unpause(self, uuid: str) -> None:
        """Undo pause. Raises GuestStateInvalid unless paused."""

    @abc.abstractmethod
    def suspend(self, uuid: str) -> None:
        """Save the guest's memory to disk and stop it. Raises GuestStateInvalid unless running."""

    @abc.abstractmethod
    def resume(self, uuid: str) -> None:
        """Restore a suspended guest. Raises GuestStateInvalid unless suspended."""

    # --- inspection ----------------------------------------------------

    @abc.abstractmethod
    def get_info(self, uuid: str) -> GuestInfo:
        """Power state and resources of one guest. Raises GuestNotFound."""

    @abc.abstractmethod
    def list_instances(self) -> list[str]:
        """UUIDs of every guest this driver created on this host (running or not)."""

    def instance_exists(self, uuid: str) -> bool:
        """True when the hypervisor has a guest for ``uuid``."""
        return uuid in self.list_instances()

    def get_power_states(self) -> dict[str, PowerState]:
        """Every guest's power state in one sweep (used by the power-state sync)."""
        return {uuid: self.get_info(uuid).power_state for uuid in self.list_instances()}

    @abc.abstractmethod
    def get_console_output(self, uuid: str, max_bytes: int = 65536) -> str:
        """The tail (at most ``max_bytes``) of the guest's serial console. Raises GuestNotFound."""

    def get_diagnostics(self, uuid: str) -> dict[str, int | float | str]:
        """The guest's counters as Nova's pre-2.48 ``/diagnostics`` shows them (flat names such
        as ``memory``, ``cpu0_time``, ``vda_read``, ``vnet0_rx``). Raises GuestNotFound, and
        NotSupported from drivers that keep no counters (this default)."""
        raise NotSupported(what="server diagnostics", reason=f"the {type(self).__name__} keeps no guest counters")

    @abc.abstractmethod
    def get_available_resource(self) -> HostResources:
        """Capacity of this host and what the driver's guests use of it."""

    # --- network -------------------------------------------------------

    @abc.abstractmethod
    def attach_interface(self, uuid: str, interface: NetworkInterface) -> None:
        """Add a NIC (hot-plugged when running, and kept in the definition).

        Same MAC already attached: no error. Raises GuestNotFound, InvalidGuestSpec.
        """

    @abc.abstractmethod
    def detach_interface(self, uuid: str, interface: NetworkInterface) -> None:
        """Remove the NIC with ``interface.mac``. Not attached: no error. Raises GuestNotFound."""

    # --- volumes -------------------------------------------------------
    # Defaults that refuse, so a driver without volumes says so instead of failing to load.

    def attach_volume(self, uuid: str, disk: VolumeDisk) -> None:
        """Add the volume's disk (hot-plugged when running, and kept in the definition, so a
        reboot or a stop and start keeps it). Same volume already attached: no error.
        Raises GuestNotFound, InvalidGuestSpec, HypervisorError (e.g. the volume cannot be reached).
        """
        raise NotSupported(what="volume attachment", reason=f"the {type(self).__name__} has no volumes")

    def detach_volume(self, uuid: str, volume_id: str) -> None:
        """Remove the volume's disk and return once the guest has let go of it. Not attached:
        no error. Raises GuestNotFound, HypervisorError (the guest did not release it in time).
        """
        raise NotSupported(what="volume detachment", reason=f"the {type(self).__name__} has no volumes")

    # --- moves and snapshots -------------------------------------------
    # Rebuild needs nothing more: the manager destroys the guest and spawns it again from
    # the new image on the same NICs. These have defaults that refuse, so a driver that
    # cannot move guests says so instead of failing to load.

    def migrate_disk_and_power_off(self, uuid: str, timeout: float = 0) -> str | None:
        """Shut the guest off (ACPI first for up to ``timeout`` s) and set it aside for a move.

        The set-aside guest is no longer listed; it stays, with its disk, until
        :meth:`confirm_migration` removes it or :meth:`finish_revert_migration` brings it
        back. Returns the path of one standalone file holding the guest's disk (no backing
        file), for the destination's :meth:`finish_migration`; None when it has no disk.
        Idempotent: a guest already set aside gives its file again. Raises GuestNotFound.
        """
        raise HypervisorError(host="-", action="migrate", instance=uuid,
                              reason=f"the {self.hypervisor_type} driver cannot move guests")

    def finish_migration(self, spec: GuestSpec, disk_path: str | None, power_on: bool) -> None:
        """Create the moved guest from ``spec`` on a copy of the disk file at ``disk_path`` (grown
        to ``spec.disk_gb``; the image's disk when None), started when ``power_on``.

        Raises as :meth:`spawn` does (GuestExists, InvalidGuestSpec, HypervisorError).
        """
        raise HypervisorError(host="-", action="finish the migration of", instance=spec.uuid,
                              reason=f"the {self.hypervisor_type} driver cannot move guests")

    def confirm_migration(self, uuid: str) -> None:  # noqa: B027 - nothing set aside: nothing to do
        """Remove the guest :meth:`migrate_disk_and_power_off` set aside, and its disk. Idempotent."""

    def finish_revert_migration(self, uuid: str, power_on: bool) -> None:
        """Bring back the guest set aside by :meth:`migrate_disk_and_power_off`, as it was (old
        resources, same disk), started when ``power_on``. Idempotent: a guest already back is
        left as it is. Raises GuestNotFound when there is neither.
        """
        raise GuestNotFound(instance=uuid, host="-")

    def snapshot(self, uuid: str, target: str, disk_format: str) -> None:
        """Write the guest's disk, as a standalone ``disk_format`` (qcow2 or raw) image, to the
        file ``target``; the guest keeps its power state. Raises GuestNotFound, HypervisorError
        (no disk to snapshot)."""
        raise HypervisorError(host="-", action="snapshot", instance=uuid,
                              reason=f"the {self.hypervisor_type} driver cannot snapshot guests")
