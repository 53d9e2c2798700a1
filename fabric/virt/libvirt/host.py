"""The one place fabric touches the libvirt C library's connection.

Every libvirt call runs through :meth:`Host.call`, which executes it in a
native thread (``eventlet.tpool``) so a slow hypervisor never blocks the
eventlet hub, and which survives a libvirtd restart: when a call fails
because the connection died, the connection is reopened and the call retried
once (guests are looked up by UUID on every call, so they are found again).

A libvirt event loop runs in one native daemon thread per process; it is
required by ``qemu:///embed`` (and keeps close callbacks working elsewhere).
Swapping the concurrency model means changing only :func:`_offload` here.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import libvirt
from eventlet import patcher, tpool

from fabric.exception import HypervisorUnavailable, Invalid

LOG = logging.getLogger(__name__)
T = TypeVar("T")

_native_threading = patcher.original("threading")
_event_loop_lock = _native_threading.Lock()
_event_loop_started = False

#: libvirt error codes that mean "the connection is gone", not "the call failed".
_CONNECTION_LOST_CODES = {
    libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_ERR_RPC,
}


def _silence(_ctx, _err) -> None:
    """libvirt prints every error to stderr by default; fabric raises them instead."""


libvirt.registerErrorHandler(_silence, None)


def _offload(fn: Callable[..., T], *args) -> T:
    """Run ``fn(*args)`` off the eventlet hub, in a native thread."""
    return tpool.execute(fn, *args)


def start_event_loop() -> None:
    """Register libvirt's default event implementation and run it in a native thread (once)."""
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        _native_threading.Thread(target=run, name="libvirt-event-loop", daemon=True).start()
        _event_loop_started = True


def detect_virt_type(setting: str, cpuinfo: str = "/proc/cpuinfo", modules: str = "/sys/module",
                     kvm_device: str = "/dev/kvm") -> str:
    """``kvm`` or ``qemu`` for a ``virt_type`` setting of auto|kvm|qemu.

    ``auto`` picks KVM only when hardware virtualisation is really there: the
    CPU flags carry vmx or svm AND kvm_intel or kvm_amd is loaded AND
    /dev/kvm exists (a software /dev/kvm alone does not count: stock guest
    kernels fail under it). Raises Invalid for any other setting.
    """
    if setting in ("kvm", "qemu"):
        return setting
    if setting != "auto":
        raise Invalid(reason=f"virt_type {setting!r}: expected auto, kvm or qemu")
    try:
        flags = set()
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
    except OSError:
        return "qemu"
    hardware = bool(flags & {"vmx", "svm"})
    module = any(os.path.isdir(os.path.join(modules, m)) for m in ("kvm_intel", "kvm_amd"))
    return "kvm" if hardware and module and os.path.exists(kvm_device) else "qemu"


def connection_lost(exc: libvirt.libvirtError, conn: libvirt.virConnect | None) -> bool:
    """True when ``exc`` means the connection died (so reconnecting may help)."""
    if exc.get_error_code() not in _CONNECTION_LOST_CODES:
        return False
    if conn is None:
        return True
    try:
        return not conn.isAlive()
    except libvirt.libvirtError:
        return True


class Host:
    """A (re)connecting libvirt connection to one URI."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()  # green lock when monkey patched: guards (re)opening
        self.reconnects = 0

    def _open(self) -> libvirt.virConnect:
        start_event_loop()
        try:
            conn = _offload(libvirt.open, self.uri)
        except libvirt.libvirtError as exc:
            raise HypervisorUnavailable(uri=self.uri, reason=exc.get_error_message()) from exc
        try:
            conn.registerCloseCallback(self._closed, None)
        except libvirt.libvirtError:
            pass  # drivers without close callbacks: call() still notices a dead connection
        LOG.info("connected to libvirt at %s", self.uri)
        return conn

    def _closed(self, conn, reason, _opaque) -> None:
        # Runs on the event loop thread: only drop the reference.
        LOG.warning("libvirt connection to %s closed (reason %s)", self.uri, reason)
        if self._conn is conn:
            self._conn = None

    def connection(self) -> libvirt.virConnect:
        """The open connection, opening it if needed. Raises HypervisorUnavailable."""
        with self._lock:
            if self._conn is None:
                self._conn = self._open()
            return self._conn

    def call(self, fn: Callable[[libvirt.virConnect], T]) -> T:
        """Run ``fn(connection)`` off the hub; reconnect and retry once if the connection died.

        libvirt errors other than a lost connection propagate unchanged.
        """
        conn = self.connection()
        try:
            return _offload(fn, conn)
        except libvirt.libvirtError as exc:
            if not connection_lost(exc, conn):
                raise
            LOG.warning("libvirt connection to %s lost (%s); reconnecting", self.uri, exc)
            self.drop(conn)
            self.reconnects += 1
            return _offload(fn, self.connection())

    def drop(self, conn: libvirt.virConnect | None = None) -> None:
        """Forget (and close) the connection so the next call reopens it."""
        with self._lock:
            if conn is not None and self._conn is not conn:
                return
            old, self._conn = self._conn, None
        if old is not None:
            try:
                _offload(old.close)
            except libvirt.libvirtError:
                pass

    def close(self) -> None:
        self.drop()
