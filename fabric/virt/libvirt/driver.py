"""The libvirt driver: real guests through libvirt (qemu:///system, qemu:///embed, test:///).

Guests are domains named ``fabric-<uuid>``; their files (qcow2 overlay,
console log) live in ``<instances_path>/<uuid>/``. Every libvirt call goes
through :class:`~fabric.virt.libvirt.host.Host` (off the hub, reconnecting).
Waiting for a guest to stop polls its state with a deadline; nothing else
sleeps.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt

from fabric.exception import (
    GuestExists,
    GuestNotFound,
    GuestStateInvalid,
    HypervisorError,
    HypervisorUnavailable,
    Invalid,
)
from fabric.virt.driver import (
    ComputeDriver,
    GuestInfo,
    GuestSpec,
    HostResources,
    NetworkInterface,
    PowerState,
    VolumeDisk,
)
from fabric.virt.libvirt import config, diagnostics, volumes
from fabric.virt.libvirt.host import Host, detect_virt_type
from fabric.virt.libvirt.images import ImageCache, qemu_img

LOG = logging.getLogger(__name__)

_POWER_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: PowerState.NOSTATE,
    libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: PowerState.RUNNING,  # still shutting down: running until it is off
    libvirt.VIR_DOMAIN_SHUTOFF: PowerState.SHUTDOWN,
    libvirt.VIR_DOMAIN_CRASHED: PowerState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: PowerState.SUSPENDED,
}
_POLL_INTERVAL = 0.1
#: Seconds a guest gets to let go of a detached disk (ACPI eject): 0.45 s measured under TCG.
VOLUME_DETACH_TIMEOUT = 30.0

#: qemu.conf for an embedded driver: no virtlogd or libvirtd to lean on, no
#: security labels or cgroups to manage (the caller's process owns everything).
EMBED_QEMU_CONF = """# written by fabric for qemu:///embed
user = "root"
group = "root"
security_driver = "none"
stdio_handler = "file"
cgroup_controllers = [ ]
"""


def prepare_embedded_root(uri: str) -> None:
    """For ``qemu:///embed?root=DIR``: create DIR and its etc/qemu.conf unless present."""
    parsed = urllib.parse.urlsplit(uri)
    if not (parsed.scheme == "qemu" and parsed.path == "/embed"):
        return
    root = urllib.parse.parse_qs(parsed.query).get("root", [""])[0]
    if not root.startswith("/"):
        raise Invalid(reason=f"libvirt_uri {uri!r}: qemu:///embed needs root=<absolute directory>")
    conf = Path(root) / "etc" / "qemu.conf"
    if not conf.exists():
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(EMBED_QEMU_CONF)


def _power_state(dom: libvirt.virDomain) -> PowerState:
    state = _POWER_STATES.get(dom.state()[0], PowerState.NOSTATE)
    if state == PowerState.SHUTDOWN and dom.hasManagedSaveImage(0):
        return PowerState.SUSPENDED
    return state


def _lookup(conn: libvirt.virConnect, uuid: str) -> libvirt.virDomain | None:
    try:
        return conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


class LibvirtDriver(ComputeDriver):
    """Guests on one libvirt connection. Settings: compute.libvirt_uri, virt_type, instances_path."""

    def __init__(self, settings) -> None:
        compute = settings.compute
        self.uri = compute.libvirt_uri
        self.hostname = settings.default.host
        self.instances_path = Path(compute.instances_path or Path(settings.default.data_dir) / "instances")
        self.shutdown_timeout = compute.guest_shutdown_timeout
        if self.uri.startswith("test:"):
            self.domain_type = "test"
        else:
            self.domain_type = detect_virt_type(compute.virt_type)
        self.hypervisor_type = self.domain_type
        self.host = Host(self.uri)
        self.images = ImageCache(self.instances_path, self.hostname)

    # --- plumbing ------------------------------------------------------

    def init_host(self, host: str) -> None:
        self.hostname = host
        self.images.host = host
        self.instances_path.mkdir(parents=True, exist_ok=True)
        prepare_embedded_root(self.uri)
        self.host.connection()
        LOG.info("libvirt driver on %s: %s guests (%s), %d found", host, self.domain_type, self.uri,
                 len(self.list_instances()))

    def cleanup_host(self) -> None:
        self.host.close()

    def _error(self, action: str, uuid: str, exc: Exception) -> HypervisorError:
        reason = exc.get_error_message() if isinstance(exc, libvirt.libvirtError) else str(exc)
        return HypervisorError(host=self.hostname, action=action, instance=uuid, reason=reason)

    def _on_domain(self, uuid: str, action: str, fn):
        """Run ``fn(dom)`` off the hub; GuestNotFound if absent, HypervisorError on libvirt failure."""
        def work(conn):
            dom = _lookup(conn, uuid)
            if dom is None:
                return GuestNotFound(instance=uuid, host=self.hostname)
            return fn(dom)

        try:
            result = self.host.call(work)
        except libvirt.libvirtError as exc:
            raise self._error(action, uuid, exc) from exc
        if isinstance(result, Exception):
            raise result
        return result

    def _instance_dir(self, uuid: str) -> Path:
        return self.instances_path / uuid

    def _wait_for_shutoff(self, uuid: str, timeout: float) -> bool:
        """Poll until the guest is off (or gone); False when ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                state = self._on_domain(uuid, "wait for", lambda d: d.state()[0])
            except GuestNotFound:
                return True
            if state == libvirt.VIR_DOMAIN_SHUTOFF:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_INTERVAL)

    def _require(self, uuid: str, action: str, *accepted: PowerState) -> PowerState:
        state = self._on_domain(uuid, action, _power_state)
        if state not in accepted:
            raise GuestStateInvalid(action=action, instance=uuid, state=state.name.lower(),
                                    accepted=" or ".join(s.name.lower() for s in accepted))
        return state

    # --- lifecycle -----------------------------------------------------

    def spawn(self, spec: GuestSpec) -> None:
        self._create(spec, lambda inst_dir: self._image_disk(spec, inst_dir), start=True, action="spawn")
        LOG.info("spawned guest %s", spec.uuid)

    def _image_disk(self, spec: GuestSpec, inst_dir: Path) -> Path | None:
        """The guest's local disk (vda): a qcow2 overlay on the cached base of the spec's disk image;
        for a kernel booted without one, a blank qcow2 of the flavor's ``disk_gb`` (Nova's root disk
        of such an image), so what the guest writes lives in the instance's disk file that moves and
        snapshots carry. None: no local disk (a flavor without disk, or a volume as vda)."""
        if spec.image.disk_path:
            return self.images.create_overlay(spec.image.disk_path, spec.image.disk_format, inst_dir / "disk",
                                              spec.disk_gb, spec.uuid)
        if spec.disk_gb == 0 or any(volume.device == "vda" for volume in spec.volumes):
            return None
        return self.images.create_blank(inst_dir / "disk", spec.disk_gb, spec.uuid)

    def _create(self, spec: GuestSpec, make_disk, *, start: bool, action: str) -> None:
        """Define the guest of ``spec`` on the disk ``make_disk(instance dir)`` makes, and start it
        when ``start``; on failure nothing of it is left."""
        spec.validate()
        if self.instance_exists(spec.uuid):
            raise GuestExists(instance=spec.uuid, host=self.hostname)
        inst_dir = self._instance_dir(spec.uuid)
        try:
            inst_dir.mkdir(parents=True, exist_ok=True)
            disk = make_disk(inst_dir)
            xml = config.guest_xml(spec, self.domain_type, str(inst_dir / "console.log"),
                                   str(disk) if disk else None, "qcow2")

            def define_and_start(conn):
                dom = conn.defineXML(xml)
                if not start:
                    return
                try:
                    dom.create()
                except libvirt.libvirtError:
                    dom.undefineFlags(0)
                    raise

            self.host.call(define_and_start)
        except libvirt.libvirtError as exc:
            shutil.rmtree(inst_dir, ignore_errors=True)
            raise self._error(action, spec.uuid, exc) from exc
        except BaseException:
            shutil.rmtree(inst_dir, ignore_errors=True)
            raise

    def destroy(self, uuid: str, graceful_timeout: float = 0) -> None:
        if graceful_timeout > 0:
            try:
                if self._on_domain(uuid, "shut down", lambda d: d.isActive()):
                    self._on_domain(uuid, "shut down", lambda d: d.shutdown())
                    self._wait_for_shutoff(uuid, graceful_timeout)
            except (GuestNotFound, HypervisorError):
                pass  # the forced path below decides

        def remove(conn):
            dom = _lookup(conn, uuid)
            if dom is None:
                return
            if dom.isActive():
                try:
                    dom.destroy()
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:  # already off
                        raise
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)

        try:
            self.host.call(remove)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise self._error("destroy", uuid, exc) from exc
        shutil.rmtree(self._instance_dir(uuid), ignore_errors=True)
        LOG.info("destroyed guest %s", uuid)

    def reboot(self, uuid: str, hard: bool = False, timeout: float = 30) -> None:
        state = self._require(uuid, "reboot", PowerState.RUNNING, PowerState.SHUTDOWN, PowerState.CRASHED)
        if state == PowerState.RUNNING:
            stopped = False
            if not hard:
                # ACPI shutdown then start: a guest whose acpid powers off on the
                # button still comes back, unlike virDomainReboot.
                self._on_domain(uuid, "reboot", lambda d: d.shutdown())
                stopped = self._wait_for_shutoff(uuid, timeout)
            if not stopped:
                self._force_off(uuid, "reboot")
        self._on_domain(uuid, "reboot", lambda d: d.create())

    def _force_off(self, uuid: str, action: str) -> None:
        def off(dom):
            if dom.isActive():
                dom.destroy()
        self._on_domain(uuid, action, off)

    def power_off(self, uuid: str, timeout: float = 0) -> None:
        state = self._require(uuid, "power off", PowerState.RUNNING, PowerState.PAUSED,
                              PowerState.CRASHED, PowerState.SHUTDOWN, PowerState.NOSTATE)
        if state == PowerState.SHUTDOWN:
            return
        if timeout > 0 and state == PowerState.RUNNING:
            self._on_domain(uuid, "power off", lambda d: d.shutdown())
            if self._wait_for_shutoff(uuid, timeout):
                return
        self._force_off(uuid, "power off")

    def power_on(self, uuid: str) -> None:
        state = self._require(uuid, "power on", PowerState.SHUTDOWN, PowerState.CRASHED, PowerState.RUNNING)
        if state != PowerState.RUNNING:
            self._on_domain(uuid, "power on", lambda d: d.create())

    def pause(self, uuid: str) -> None:
        self._require(uuid, "pause", PowerState.RUNNING)
        self._on_domain(uuid, "pause", lambda d: d.suspend())

    def unpause(self, uuid: str) -> None:
        self._require(uuid, "unpause", PowerState.PAUSED)
        self._on_domain(uuid, "unpause", lambda d: d.resume())

    def suspend(self, uuid: str) -> None:
        self._require(uuid, "suspend", PowerState.RUNNING)
        self._on_domain(uuid, "suspend", lambda d: d.managedSave(0))

    def resume(self, uuid: str) -> None:
        self._require(uuid, "resume", PowerState.SUSPENDED)
        self._on_domain(uuid, "resume", lambda d: d.create())

    # --- moves and snapshots -------------------------------------------
    # A move sets the guest aside in <instances_path>/<uuid>_resize/ (its overlay, console log
    # and inactive definition as domain.xml), undefined, so the destination (which may be this
    # host) can define a new guest of the same name. The file shipped is one standalone qcow2
    # (transfer.qcow2: the overlay and its base flattened by qemu-img convert): the destination
    # has no copy of this host's cached base, and needs none.

    def _resize_dir(self, uuid: str) -> Path:
        return self.instances_path / f"{uuid}_resize"

    def migrate_disk_and_power_off(self, uuid: str, timeout: float = 0) -> str | None:
        aside, inst_dir = self._resize_dir(uuid), self._instance_dir(uuid)
        if not self.instance_exists(uuid):
            if not aside.exists():
                raise GuestNotFound(instance=uuid, host=self.hostname)
        else:
            self.power_off(uuid, timeout)
            xml = self._on_domain(uuid, "set aside", lambda d: d.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            inst_dir.mkdir(parents=True, exist_ok=True)
            (inst_dir / "domain.xml").write_text(xml)
            if aside.exists():
                shutil.rmtree(aside)  # an earlier attempt's, whose guest was brought back since
            self._on_domain(uuid, "set aside",
                            lambda d: d.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE))
            os.replace(inst_dir, aside)
        disk, transfer = aside / "disk", aside / "transfer.qcow2"
        if not disk.exists():
            return None
        if not transfer.exists():
            partial = aside / "transfer.part"
            qemu_img("convert", "-q", "-O", "qcow2", str(disk), str(partial), host=self.hostname, instance=uuid)
            os.replace(partial, transfer)
        LOG.info("guest %s set aside for a move; its disk is %s", uuid, transfer)
        return str(transfer)

    def finish_migration(self, spec: GuestSpec, disk_path: str | None, power_on: bool) -> None:
        def disk(inst_dir: Path) -> Path | None:
            if disk_path is None:
                return self._image_disk(spec, inst_dir)
            target = inst_dir / "disk"
            shutil.copyfile(disk_path, target)
            size = json.loads(qemu_img("info", "--output=json", "-f", "qcow2", str(target),
                                        host=self.hostname, instance=spec.uuid)).get("virtual-size", 0)
            if spec.disk_gb * 1024**3 > int(size):  # a bigger flavor's disk: grown (never shrunk)
                qemu_img("resize", "-q", "-f", "qcow2", str(target), f"{spec.disk_gb}G",
                          host=self.hostname, instance=spec.uuid)
            return target

        self._create(spec, disk, start=power_on, action="finish the migration of")

    def confirm_migration(self, uuid: str) -> None:
        shutil.rmtree(self._resize_dir(uuid), ignore_errors=True)

    def finish_revert_migration(self, uuid: str, power_on: bool) -> None:
        aside, inst_dir = self._resize_dir(uuid), self._instance_dir(uuid)
        if not aside.exists():
            if not self.instance_exists(uuid):
                raise GuestNotFound(instance=uuid, host=self.hostname)
            return  # already back
        if self.instance_exists(uuid):
            self.destroy(uuid)  # the moved guest, if this host was also the destination
        shutil.rmtree(inst_dir, ignore_errors=True)
        (aside / "transfer.qcow2").unlink(missing_ok=True)
        os.replace(aside, inst_dir)
        xml = (inst_dir / "domain.xml").read_text()

        def define(conn):
            dom = conn.defineXML(xml)
            if power_on:
                dom.create()

        try:
            self.host.call(define)
        except libvirt.libvirtError as exc:
            raise self._error("bring back", uuid, exc) from exc
        LOG.info("guest %s brought back after a reverted move", uuid)

    def snapshot(self, uuid: str, target: str, disk_format: str) -> None:
        state = self._on_domain(uuid, "snapshot", _power_state)
        disk = self._instance_dir(uuid) / "disk"
        if not disk.exists():
            raise HypervisorError(host=self.hostname, action="snapshot", instance=uuid,
                                  reason="the guest has no local disk (a kernel booted on a flavor without disk, "
                                         "or a volume as vda): there is nothing to snapshot")
        # A running guest is paused while its disk is read (-U: QEMU holds the image's lock), so
        # no write lands half-way through the copy; what the guest's page cache holds is not on
        # the disk yet (as with any crash-consistent snapshot).
        paused = state == PowerState.RUNNING
        if paused:
            self._on_domain(uuid, "pause for a snapshot of", lambda d: d.suspend())
        try:
            qemu_img("convert", "-q", "-U", "-O", disk_format, str(disk), target, host=self.hostname,
                      instance=uuid)
        finally:
            if paused:
                self._on_domain(uuid, "resume after a snapshot of", lambda d: d.resume())

    # --- inspection ----------------------------------------------------

    def get_info(self, uuid: str) -> GuestInfo:
        def info(dom):
            state, max_kib, _mem, vcpus, cpu_time = dom.info()
            return GuestInfo(uuid, _power_state(dom), vcpus, max_kib // 1024, cpu_time or None)
        return self._on_domain(uuid, "inspect", info)

    def _our_domains(self, conn) -> list[libvirt.virDomain]:
        return [d for d in conn.listAllDomains(0) if d.name().startswith(config.NAME_PREFIX)]

    def list_instances(self) -> list[str]:
        try:
            return self.host.call(lambda conn: [d.UUIDString() for d in self._our_domains(conn)])
        except libvirt.libvirtError as exc:
            raise HypervisorUnavailable(uri=self.uri, reason=exc.get_error_message()) from exc

    def instance_exists(self, uuid: str) -> bool:
        def exists(conn):
            dom = _lookup(conn, uuid)
            return dom is not None and dom.name().startswith(config.NAME_PREFIX)
        return self.host.call(exists)

    def get_power_states(self) -> dict[str, PowerState]:
        def sweep(conn):
            states = {}
            for dom in self._our_domains(conn):
                try:
                    states[dom.UUIDString()] = _power_state(dom)
                except libvirt.libvirtError:
                    continue  # vanished between list and state: the next sweep sees it gone
            return states
        return self.host.call(sweep)

    def get_diagnostics(self, uuid: str) -> dict[str, int | float | str]:
        return self._on_domain(uuid, "read the diagnostics of", diagnostics.domain_diagnostics)

    def get_console_output(self, uuid: str, max_bytes: int = 65536) -> str:
        self._on_domain(uuid, "read the console of", lambda d: None)
        log = self._instance_dir(uuid) / "console.log"
        try:
            with open(log, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                fh.seek(max(0, size - max_bytes))
                return fh.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def get_available_resource(self) -> HostResources:
        def gather(conn):
            _model, memory_mb, cpus, *_ = conn.getInfo()
            used = [0, 0, 0, 0]
            for dom in self._our_domains(conn):
                try:
                    state, max_kib, _mem, vcpus, _t = dom.info()
                    disk = config.disk_gb_from_xml(dom.XMLDesc(0))
                except libvirt.libvirtError:
                    continue
                used[0] += vcpus
                used[1] += max_kib // 1024
                used[2] += disk
                used[3] += state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED)
            return conn.getHostname(), memory_mb, cpus, used

        hostname, memory_mb, cpus, used = self.host.call(gather)
        self.instances_path.mkdir(parents=True, exist_ok=True)
        st = os.statvfs(self.instances_path)
        return HostResources(
            hypervisor_type=self.hypervisor_type, hypervisor_hostname=hostname,
            vcpus=cpus, memory_mb=memory_mb, disk_gb=st.f_blocks * st.f_frsize // 1024**3,
            vcpus_used=used[0], memory_mb_used=used[1], disk_gb_used=used[2], running_vms=used[3],
        )

    # --- network -------------------------------------------------------

    def attach_interface(self, uuid: str, interface: NetworkInterface) -> None:
        interface.validate(uuid)
        xml = config.interface_xml(interface)

        def attach(dom):
            if interface.mac.lower() in config.interface_macs(dom.XMLDesc(0)):
                return
            if dom.isActive():
                dom.attachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_CONFIG | libvirt.VIR_DOMAIN_AFFECT_LIVE)
            else:
                _redefine_interfaces(dom, add=xml)
        self._on_domain(uuid, "attach an interface to", attach)

    def detach_interface(self, uuid: str, interface: NetworkInterface) -> None:
        def detach(dom):
            found = _interfaces_with_mac(ET.fromstring(dom.XMLDesc(0)), interface.mac)
            if not found:
                return
            if dom.isActive():
                # libvirt matches the device to detach on the domain's own <interface> element.
                dom.detachDeviceFlags(ET.tostring(found[0], encoding="unicode"),
                                      libvirt.VIR_DOMAIN_AFFECT_CONFIG | libvirt.VIR_DOMAIN_AFFECT_LIVE)
            else:
                _redefine_interfaces(dom, remove_mac=interface.mac)
        self._on_domain(uuid, "detach an interface from", detach)

    # --- volumes -------------------------------------------------------

    def attach_volume(self, uuid: str, disk: VolumeDisk) -> None:
        disk.validate(uuid)
        xml = volumes.disk_xml(disk, uuid)

        def attach(dom):
            root = ET.fromstring(dom.XMLDesc(0))
            if volumes.volume_disks(root, disk.volume_id):
                return
            if disk.device in volumes.used_devices(root):
                return GuestStateInvalid(action="attach a volume to", instance=uuid,
                                         state=f"using {disk.device}", accepted=f"{disk.device} free")
            if dom.isActive():
                dom.attachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_CONFIG | libvirt.VIR_DOMAIN_AFFECT_LIVE)
            else:
                _redefine_disks(dom, add=xml)
        refused = self._on_domain(uuid, "attach a volume to", attach)
        if refused is not None:
            raise refused
        LOG.info("volume %s attached to guest %s as %s", disk.volume_id, uuid, disk.device)

    def detach_volume(self, uuid: str, volume_id: str) -> None:
        def detach(dom):
            found = volumes.volume_disks(ET.fromstring(dom.XMLDesc(0)), volume_id)
            if dom.isActive() and found:
                # libvirt matches the device on the domain's own <disk> element; the live
                # removal finishes when the guest ejects it (asynchronously).
                dom.detachDeviceFlags(ET.tostring(found[0], encoding="unicode"),
                                      libvirt.VIR_DOMAIN_AFFECT_CONFIG | libvirt.VIR_DOMAIN_AFFECT_LIVE)
                return True
            _redefine_disks(dom, remove_volume=volume_id)
            return False
        if not self._on_domain(uuid, "detach a volume from", detach):
            return
        deadline = time.monotonic() + VOLUME_DETACH_TIMEOUT
        while self._on_domain(uuid, "detach a volume from",
                              lambda d: bool(volumes.volume_disks(ET.fromstring(d.XMLDesc(0)), volume_id))):
            if time.monotonic() >= deadline:
                raise HypervisorError(host=self.hostname, action="detach a volume from", instance=uuid,
                                      reason=f"the guest did not release volume {volume_id} within "
                                             f"{VOLUME_DETACH_TIMEOUT:.0f} s")
            time.sleep(_POLL_INTERVAL)
        LOG.info("volume %s detached from guest %s", volume_id, uuid)


def _redefine_disks(dom: libvirt.virDomain, add: str | None = None, remove_volume: str | None = None) -> None:
    """Change a shut-off guest's volume disks by redefining it (works on every libvirt driver)."""
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    devices = root.find("devices")
    if remove_volume:
        for disk in volumes.volume_disks(root, remove_volume):
            devices.remove(disk)
    if add:
        devices.append(ET.fromstring(add))
    dom.connect().defineXML(ET.tostring(root, encoding="unicode"))


def _interfaces_with_mac(domain: ET.Element, mac: str) -> list[ET.Element]:
    """The domain's <interface> elements whose MAC is ``mac`` (compared case-insensitively)."""
    return [iface for iface in domain.findall("./devices/interface")
            if (node := iface.find("mac")) is not None and node.get("address", "").lower() == mac.lower()]


def _redefine_interfaces(dom: libvirt.virDomain, add: str | None = None, remove_mac: str | None = None) -> None:
    """Change a shut-off guest's NICs by redefining it (works on every libvirt driver)."""
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    devices = root.find("devices")
    if remove_mac:
        for iface in _interfaces_with_mac(root, remove_mac):
            devices.remove(iface)
    if add:
        devices.append(ET.fromstring(add))
    dom.connect().defineXML(ET.tostring(root, encoding="unicode"))
