"""The fast boot path of the test guest: kernel preparation, /init order, domain XML, benchmark pieces."""

from __future__ import annotations

import gzip
import importlib.util
import lzma
import os
import struct
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from fabric.virt.libvirt import config
from tests.fixtures.databases import unavailable
from tests.unit.virt.conftest import make_spec

TOOLS = Path(__file__).resolve().parents[3] / "tools"
sys.path.insert(0, str(TOOLS))
import guest_image  # noqa: E402


def _load_bench():
    spec = importlib.util.spec_from_file_location("fabric_boot_bench", TOOLS / "bench" / "boot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _elf(segments: list[tuple[int, bytes, int]], note_in_first: bytes = b"") -> bytes:
    """A 64-bit little-endian ELF: (file offset, file bytes, memsz) per PT_LOAD, an optional
    PT_NOTE inside the first segment, and a section header table at the end."""
    phnum = len(segments) + (1 if note_in_first else 0)
    body = bytearray(max(off + len(data) for off, data, _ in segments))
    for off, data, _ in segments:
        body[off:off + len(data)] = data
    shoff = len(body)
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    header[0x20:0x28] = (64).to_bytes(8, "little")                 # e_phoff
    header[0x28:0x30] = shoff.to_bytes(8, "little")               # e_shoff
    header[0x36:0x38] = (56).to_bytes(2, "little")                # e_phentsize
    header[0x38:0x3A] = phnum.to_bytes(2, "little")
    header[0x3A:0x3C] = (64).to_bytes(2, "little")                # e_shentsize
    header[0x3C:0x40] = (3).to_bytes(2, "little") + (2).to_bytes(2, "little")
    phdrs = bytearray()
    for off, data, memsz in segments:
        phdrs += struct.pack("<IIQQQQQQ", 1, 5, off, 0, off, len(data), memsz, 0x1000)
    if note_in_first:
        note_off = segments[0][1].index(note_in_first) + segments[0][0]
        phdrs += struct.pack("<IIQQQQQQ", 4, 4, note_off, 0, 0, len(note_in_first), len(note_in_first), 4)
    body[:64] = header
    body[64:64 + len(phdrs)] = phdrs
    return bytes(body) + bytes(3 * 64)  # the section headers


def _phdr(elf: bytes, index: int) -> tuple[int, int, int, int]:
    p_type, _flags, offset, _v, _p, filesz, memsz, _align = struct.unpack_from("<IIQQQQQQ", elf, 64 + 56 * index)
    return p_type, offset, filesz, memsz


def test_trim_vmlinux_drops_trailing_zeros_and_section_headers_keeping_what_loads():
    text = b"\x90" * 100 + b"PVH-NOTE" + b"\xcc" * 50 + bytes(300)
    data = b"\x01\x02" + bytes(10) + b"\x03" + bytes(5000)   # .data, .bss as zeros, then zero scratch
    elf = _elf([(0x200, text, len(text)), (0x800, data, len(data) + 4096)], note_in_first=b"PVH-NOTE")

    trimmed = guest_image.trim_vmlinux(elf)

    assert _phdr(trimmed, 0) == (1, 0x200, 158, len(text))               # memsz kept: zero-filled on load
    assert _phdr(trimmed, 1) == (1, 0x800, 13, len(data) + 4096)
    note_type, note_off, note_size, _ = _phdr(trimmed, 2)
    assert note_type == 4 and trimmed[note_off:note_off + note_size] == b"PVH-NOTE"
    assert len(trimmed) == 0x800 + 13                                     # nothing past the last loaded byte
    assert trimmed[0x800:] == data[:13] and trimmed[0x200:0x200 + 158] == text[:158]
    assert struct.unpack_from("<QHHHH", trimmed, 0x28 + 0)[0] == 0       # e_shoff
    assert struct.unpack_from("<HH", trimmed, 0x3C) == (0, 0)             # e_shnum, e_shstrndx
    assert guest_image.trim_vmlinux(trimmed) == trimmed                   # idempotent


def test_trim_vmlinux_leaves_anything_but_a_64_bit_elf_alone():
    assert guest_image.trim_vmlinux(b"MZ not an elf" + bytes(100)) == b"MZ not an elf" + bytes(100)
    elf32 = b"\x7fELF\x01\x01" + bytes(100)
    assert guest_image.trim_vmlinux(elf32) == elf32


@pytest.mark.parametrize("compress", [gzip.compress, lzma.compress], ids=["gzip", "xz"])
def test_unpack_vmlinux_finds_the_elf_stream_inside_a_bzimage(compress):
    elf = _elf([(0x200, b"kernel text" * 50, 550)])
    # A decoy stream that decompresses to something else comes first, as magic bytes
    # can appear by chance inside the setup code.
    bzimage = b"\x00" * 512 + b"HdrS" + compress(b"not the kernel") + b"setup" + compress(elf) + b"\x00" * 64
    assert guest_image.unpack_vmlinux(bzimage) == elf
    assert guest_image.unpack_vmlinux(b"HdrS" + compress(b"no elf here")) is None


def test_init_loads_the_network_first_and_runs_acpid_before_dhcp():
    init = guest_image.render_init()
    assert "__" not in init  # every placeholder filled
    at = {word: init.index(word) for word in ("virtio_net", "evdev button", "acpid -c", "udhcpc -i",
                                              "wait\n", "virtio_blk", guest_image.READY_MARKER)}
    # The network modules first; acpid must run before the guest can answer ping
    # (callers press the power button right after); nothing waits for virtio_blk.
    assert at["virtio_net"] < at["evdev button"] < at["acpid -c"] < at["udhcpc -i"] < at["wait\n"]
    assert at["wait\n"] < at[guest_image.READY_MARKER] < at["virtio_blk"]
    assert "--install" not in init  # applet links are made at build time
    assert set(guest_image.MODULES) == set(guest_image.NET_MODULES + guest_image.ACPI_MODULES
                                           + guest_image.LATE_MODULES)
    assert "arping -U" in guest_image.UDHCPC_SCRIPT  # announces its address once bound


def test_the_cache_key_follows_the_kernel_command_line(monkeypatch):
    before = guest_image._builder_digest()
    monkeypatch.setattr(guest_image, "KERNEL_CMDLINE", guest_image.KERNEL_CMDLINE + " debug")
    assert guest_image._builder_digest() != before


def test_kernel_command_line_skips_the_slow_probes_and_stays_on_the_serial_console():
    words = guest_image.KERNEL_CMDLINE.split()
    assert "console=ttyS0" in words and "quiet" in words
    assert {"cryptomgr.notests", "rodata=off", "noapictimer"} <= set(words)


def test_guest_xml_has_only_the_devices_a_fast_boot_needs():
    xml = ET.fromstring(config.guest_xml(make_spec(1), "qemu", "/tmp/c.log", None))
    assert xml.find("os/type").get("machine") == "pc"
    assert xml.find("os/kernel") is not None  # direct kernel boot (PVH for an ELF vmlinux)
    devices = xml.find("devices")
    assert {child.tag for child in devices} <= {"interface", "serial", "controller", "memballoon", "disk"}
    assert devices.find("controller[@type='usb']").get("model") == "none"
    assert devices.find("memballoon").get("model") == "none"
    for absent in ("graphics", "video", "sound", "input", "channel"):
        assert devices.find(absent) is None, absent
    assert xml.find("features/acpi") is not None  # the power button acpid waits for


def test_bench_reads_the_guest_timestamps_from_the_console():
    bench = _load_bench()
    console = ("noise\nfabric-guest: init at 0.62s\nfabric-guest: modules loaded at 0.73s\n"
               "fabric-guest: eth0 10.78.0.10/24 at 0.81s\nfabric-guest: ready at 0.82s\n")
    assert bench.guest_marks(console) == {"init": 0.62, "modules": 0.73, "eth0": 0.81, "ready": 0.82}


def test_bench_icmp_checksum_matches_the_rfc_1071_example():
    _load_bench()  # puts tools/bench on the path
    import _common

    # RFC 1071's example words 0001 f203 f4f5 f6f7 sum to 0xDDF2; the checksum is its complement.
    assert _common._icmp_checksum(bytes.fromhex("0001f203f4f5f6f7")) == (~0xDDF2) & 0xFFFF


def test_bench_pinger_gets_an_answer_from_loopback(netns):
    _load_bench()
    import _common

    if os.geteuid() != 0:
        unavailable("raw ICMP sockets and namespaces need root")
    ns = netns("ping")
    ticks = []
    assert _common.ping_from(ns, "127.0.0.1", time.monotonic() + 5, on_tick=lambda: ticks.append(1))
    assert ticks
    assert not _common.ping_from(ns, "127.0.0.1", time.monotonic() - 1)  # deadline already passed
