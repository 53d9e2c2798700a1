#!/usr/bin/env python3
"""Build (once) the tiny test guest: a Debian kernel plus a busybox initramfs.

The guest boots straight from kernel + initrd (no disk), loads the virtio
network modules, takes its address by DHCP with ``udhcpc``, answers ping
(the kernel does that) and powers off on an ACPI power-button press
(``acpid``), so a graceful shutdown works. Once it is ready it fetches its
metadata from http://169.254.169.254 (OpenStack's ``meta_data.json`` and
``user_data``, with busybox ``wget``), takes its hostname from it, and runs a
user-data shell script (one starting with ``#!``), its output going to the
serial console between :data:`USER_DATA_BEGIN` and :data:`USER_DATA_END` lines,
so ``openstack console log show`` returns it. From the ready marker on it
runs an SSH server (Debian's dropbear, public keys only) whose user
:data:`SSH_USER` has the metadata's ``public_keys`` as its authorized keys, so
a client holding the server's key pair logs in, as tempest's validation does.

Everything comes from Debian's apt repositories: ``apt-get download`` fetches
the ``linux-image-*-amd64`` package (``dpkg-deb -x`` unpacks it; installing it
would pull initramfs tooling for nothing) and ``busybox-static`` (the host's
copy is used when it is installed), and ``dropbear-bin`` with the shared
libraries it needs (:data:`SSH_PACKAGES`; the only dynamically linked program
in the image). The compressed kernel is unpacked to an
ELF ``vmlinux`` so QEMU can enter it through PVH, which halves boot time
under TCG (no decompression by emulated code), and its zero padding is
trimmed (less host memory per guest). Module signatures are stripped (the
kernel does not enforce them and checking is slow under TCG), and the
kernel command line skips work a test guest does not need (see
``KERNEL_CMDLINE``).

The result is cached under ``$FABRIC_GUEST_CACHE`` (default
``~/.cache/fabric/guest``), keyed by kernel version and the content of this
builder, so the test command builds it only once; a file lock makes parallel
callers wait for one build instead of racing.

Usage: ``python tools/guest_image.py [--cache DIR]`` prints the paths as JSON.
From code: ``guest_image.ensure_guest_image() -> GuestImage``.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import hashlib
import json
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

#: Modules the guest needs, in load order; the .deb ships no modules.dep, so
#: /init insmods them by path in dependency order. The network comes first
#: (it is what callers wait for), then the ACPI power button for acpid, then
#: what nothing waits for (virtio_blk) once the address is taken.
NET_MODULES = (
    "virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
    "virtio_pci", "failover", "net_failover", "virtio_net",
)
ACPI_MODULES = ("evdev", "button")
LATE_MODULES = ("virtio_blk",)
MODULES = NET_MODULES + ACPI_MODULES + LATE_MODULES

#: Kernel command line suited to the image: serial console, quiet, and no slow
#: work a throwaway test guest does not need. Measured under TCG with
#: ``-icount shift=0,sleep=off`` (guest time counts instructions, so load on
#: the host does not blur it), guest uptime at /init:
#:   (previous line)            1.70 s
#:   + cryptomgr.notests        0.82 s  skips the self-tests of every built-in
#:                                      crypto algorithm: half the kernel's boot
#:   + rodata=off               0.70 s  no read-only remap and W+X page scan
#:   + noapictimer              0.62 s  no local APIC timer, so no ~0.1 s busy
#:                                      calibration of it (the HPET ticks instead)
#: Measured and left out (no gain): lsm=capability, no_timer_check,
#: ipv6.disable=1, lpj=.
#: i8042.noaux/nokbd skip probing a PS/2 mouse and keyboard nobody uses;
#: tsc=reliable skips the clocksource watchdog; mitigations=off skips
#: speculation workarounds (the guest runs only our own code).
KERNEL_CMDLINE = ("console=ttyS0 panic=-1 quiet loglevel=3 i8042.noaux i8042.nokbd tsc=reliable "
                  "mitigations=off cryptomgr.notests rodata=off noapictimer")

#: Bump when the build changes in a way the scripts below do not show (forces a rebuild).
#: 3: trimmed vmlinux, applet links made at build time, modules in three groups.
#: 4: metadata fetched at boot, user-data script run with its output on the console.
#: 5: dropbear SSH server with the metadata's public keys.
BUILDER_VERSION = "5"

#: The user an SSH client logs in as (the metadata's public keys are its authorized keys).
SSH_USER = "root"
#: Debian packages of the SSH server: dropbear-bin and every package its libraries come
#: from (its Depends, and libtomcrypt1's libgmp10), fetched with ``apt-get download`` so the
#: libraries match it whatever the host has installed.
SSH_PACKAGES = ("dropbear-bin", "libc6", "libcrypt1", "libtomcrypt1", "libtommath1", "libgmp10", "zlib1g")
#: The shared objects dropbear loads (checked at build time with the image's own loader).
SSH_LIBRARIES = ("libc.so.6", "libcrypt.so.1", "libtomcrypt.so.1", "libtommath.so.1", "libgmp.so.10", "libz.so.1")
LOADER = "ld-linux-x86-64.so.2"
LIBRARY_DIR = "lib/x86_64-linux-gnu"

#: Printed on the serial console once the guest has its address and acpid runs
#: (virtio_blk, which nothing waits for, loads after it).
READY_MARKER = "fabric-guest: ready"

#: Where the guest keeps what it fetched from the metadata service (tmpfs), the SSH user's
#: authorized keys among it.
METADATA_DIR = "/run/metadata"

#: Printed on the serial console, with their number, once the metadata's public keys are the
#: SSH user's authorized keys (the SSH server listens from the ready marker on).
SSH_KEYS_MARKER = "fabric-guest: ssh keys"

#: Console lines around a user-data script's output; the end line carries its exit status.
USER_DATA_BEGIN = "fabric-guest: user-data begin"
USER_DATA_END = "fabric-guest: user-data end, exit"

# Applet links are made at build time (one step less at boot; no measurable gain alone).
INIT_SCRIPT = r"""#!/bin/busybox sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
read up idle < /proc/uptime; echo "fabric-guest: init at ${up}s"
for m in __NET_MODULES__; do
    insmod /lib/modules/$m.ko
done
echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 2>/dev/null
ip link set lo up
for dev in /sys/class/net/eth*; do
    [ -e "$dev" ] && ip link set "${dev##*/}" up
done
# acpid runs before the guest answers ping: callers may press the power button
# as soon as it does.
for m in __ACPI_MODULES__; do
    insmod /lib/modules/$m.ko
done
acpid -c /etc/acpi -l /dev/null
hostname fabric-guest
read up idle < /proc/uptime; echo "fabric-guest: modules loaded at ${up}s"
for dev in /sys/class/net/eth*; do
    [ -e "$dev" ] || continue
    # -T 1 -A 1: a lost packet is resent after 1 s, not 3 (dnsmasq answers in milliseconds).
    udhcpc -i "${dev##*/}" -s /etc/udhcpc.script -t 60 -T 1 -A 1 -q -n &
done
wait
read up idle < /proc/uptime; echo "__READY__ at ${up}s"
for m in __LATE_MODULES__; do
    insmod /lib/modules/$m.ko
done
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
# The SSH server (it forks): keys only (-s), host keys made at the first connection (-R:
# ed25519 for a current client, quick under TCG too), its log on the console. Logins work
# once fabric-metadata has written the keys.
dropbear -R -s -E -P /run/dropbear.pid
/bin/fabric-metadata &
while true; do sleep 3600; done
"""

# Metadata at boot. No wget -T: Debian 12's static busybox wget crashes with it;
# busybox timeout bounds each try instead. The service may not be wired the
# instant the guest has its address, so meta_data.json is retried for ~30 s;
# once it has answered, a failing user_data fetch means there is none.
METADATA_SCRIPT = r"""#!/bin/sh
URL=http://169.254.169.254/openstack/latest
mkdir -p __METADATA_DIR__ && cd __METADATA_DIR__ || exit 1
fetch() { timeout 10 wget -q -O "$1.part" "$URL/$1" && mv "$1.part" "$1"; }
tries=0
until fetch meta_data.json; do
    tries=$((tries + 1))
    if [ $tries -ge 30 ]; then echo "fabric-guest: no metadata" > /dev/console; exit 0; fi
    sleep 1
done
field() { sed -n "s/.*\"$1\": \"\([^\"]*\)\".*/\1/p" meta_data.json; }
name=$(field hostname)
[ -n "$name" ] && hostname "$name"
echo "fabric-guest: metadata uuid=$(field uuid) hostname=$name" > /dev/console
# The SSH user's authorized keys (its ~/.ssh/authorized_keys links here), replaced whole:
# public_keys is {"name": "key", ...} (names have no quotes); a key may end in an escaped newline.
sed -n 's/.*"public_keys": {\([^}]*\)}.*/\1/p' meta_data.json | grep -o '": "[^"]*"' \
    | sed 's/^": "//; s/"$//; s/\\n$//' > authorized_keys.part
chmod 600 authorized_keys.part && mv authorized_keys.part authorized_keys
echo "__SSH_KEYS__ $(grep -c . authorized_keys)" > /dev/console
fetch user_data || exit 0
if [ "$(head -c 2 user_data)" = "#!" ]; then
    chmod +x user_data
    echo "__BEGIN__" > /dev/console
    ./user_data > /dev/console 2>&1
    echo "__END__ $?" > /dev/console
fi
"""

# After binding, one gratuitous ARP: a host already pinging the address (its
# neighbour entry waiting for an ARP answer, retried once a second) learns it
# at once instead of at its next retry.
UDHCPC_SCRIPT = r"""#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    if [ -n "$staticroutes" ]; then
        # Classless static routes (option 121) replace the router option (RFC 3442). A
        # routed network's /32 lease has them: its gateway on-link first, then the default.
        set -- $staticroutes
        while [ $# -ge 2 ]; do
            if [ "$2" = 0.0.0.0 ]; then ip route replace "$1" dev "$interface"
            else ip route replace "$1" via "$2" dev "$interface"; fi
            shift 2
        done
    elif [ -n "$router" ]; then
        ip route replace default via "${router%% *}" dev "$interface"
    fi
    # The metadata service answers on the DHCP server's host (the bridge's address, a
    # routed network's gateway); on-link where the server cannot be reached.
    ip route replace 169.254.169.254/32 via "$serverid" dev "$interface" 2>/dev/null \
        || ip route replace 169.254.169.254/32 dev "$interface"
    arping -U -c 1 -I "$interface" "$ip" >/dev/null 2>&1 &
    read up idle < /proc/uptime
    echo "fabric-guest: $interface $ip/${mask:-24} at ${up}s" > /dev/console
    ;;
  deconfig)
    ip addr flush dev "$interface"
    ;;
esac
exit 0
"""

POWER_BUTTON_SCRIPT = "#!/bin/sh\necho 'fabric-guest: power button' > /dev/console\nsync\npoweroff -f\n"

#: The accounts dropbear looks up (glibc reads these files: no NSS modules in the image).
ACCOUNT_FILES = {
    "etc/passwd": f"{SSH_USER}:x:0:0:{SSH_USER}:/root:/bin/sh\n",
    "etc/group": "root:x:0:\n",
    "etc/shells": "/bin/sh\n",
}


@dataclasses.dataclass(frozen=True)
class GuestImage:
    """A built guest: boot it with ``kernel`` + ``initrd`` and ``cmdline``."""

    kernel: str
    initrd: str
    cmdline: str
    kernel_version: str
    ready_marker: str = READY_MARKER


class GuestImageError(RuntimeError):
    """The image could not be built (missing tool, package or module)."""


def default_cache_dir() -> Path:
    env = os.environ.get("FABRIC_GUEST_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fabric" / "guest"


def _run(cmd: list[str], cwd: str | Path | None = None) -> str:
    try:
        done = subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise GuestImageError(f"{cmd[0]} is not installed (needed to build the guest image)") from exc
    except subprocess.CalledProcessError as exc:
        raise GuestImageError(f"{' '.join(cmd)} failed: {exc.stderr.strip()[-500:]}") from exc
    return done.stdout


def kernel_package() -> str:
    """The concrete ``linux-image-<abi>-amd64`` package the meta package points at."""
    out = _run(["apt-cache", "depends", "linux-image-amd64"])
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends:") and "linux-image-" in line:
            return line.split(":", 1)[1].strip()
    raise GuestImageError("apt-cache found no linux-image-*-amd64 behind linux-image-amd64 (run apt-get update)")


def unpack_vmlinux(bzimage: bytes) -> bytes | None:
    """The ELF kernel inside a bzImage (the extract-vmlinux approach), or None.

    Tries every xz and gzip stream start until one decompresses to an ELF file.
    """
    candidates = []
    for magic, kind in ((b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b\x08", "gz")):
        start = bzimage.find(magic)
        while start != -1:
            candidates.append((start, kind))
            start = bzimage.find(magic, start + 1)
    for start, kind in sorted(candidates):
        try:
            if kind == "xz":
                data = lzma.LZMADecompressor().decompress(bzimage[start:])
            else:
                data = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(bzimage[start:])
        except (lzma.LZMAError, zlib.error):
            continue
        if data[:4] == b"\x7fELF":
            return data
    return None


def render_init() -> str:
    """The guest's /init with the module groups and the ready marker filled in."""
    return (INIT_SCRIPT.replace("__NET_MODULES__", " ".join(NET_MODULES))
            .replace("__ACPI_MODULES__", " ".join(ACPI_MODULES))
            .replace("__LATE_MODULES__", " ".join(LATE_MODULES))
            .replace("__READY__", READY_MARKER))


_PT_LOAD = 1


def trim_vmlinux(elf: bytes) -> bytes:
    """The ELF kernel without the zeros a loader would copy for nothing.

    The vmlinux inside a bzImage stores its .bss and scratch areas as zero
    bytes in the file (~23 MiB of 63 here). Each PT_LOAD's ``p_filesz``
    stops at its last non-zero byte (loaders, QEMU's included, zero-fill up
    to ``p_memsz``; the kernel clears its .bss itself as well), the file ends
    after the last byte a program header still covers, and the section
    headers go (loaders do not use them and they would point past the end).
    QEMU maps the file and keeps it as the ROM it reloads on reset, so this
    is host memory and copying saved per guest. Anything but a 64-bit
    little-endian ELF comes back unchanged.
    """
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        return elf
    out = bytearray(elf)
    phoff = int.from_bytes(elf[0x20:0x28], "little")
    phentsize = int.from_bytes(elf[0x36:0x38], "little")
    phnum = int.from_bytes(elf[0x38:0x3A], "little")
    end = phoff + phentsize * phnum
    view = memoryview(elf)
    for index in range(phnum):
        ph = phoff + index * phentsize
        p_type = int.from_bytes(elf[ph:ph + 4], "little")
        offset = int.from_bytes(elf[ph + 8:ph + 16], "little")
        filesz = int.from_bytes(elf[ph + 32:ph + 40], "little")
        if p_type == _PT_LOAD and filesz:
            filesz = len(bytes(view[offset:offset + filesz]).rstrip(b"\0"))
            out[ph + 32:ph + 40] = filesz.to_bytes(8, "little")
        end = max(end, offset + filesz)
    out[0x28:0x30] = bytes(8)  # e_shoff
    out[0x3C:0x40] = bytes(4)  # e_shnum, e_shstrndx
    return bytes(out[:end])


_SIG_MAGIC = b"~Module signature appended~\n"


def strip_module_signature(module: bytes) -> bytes:
    """The module without its appended signature.

    The kernel does not enforce signatures (no MODULE_SIG_FORCE), and
    checking them is slow under TCG: unsigned modules load seconds faster.
    The signature trailer is: signature, a 12-byte struct module_signature
    whose last 4 bytes are the signature length (big-endian), then the magic.
    """
    if not module.endswith(_SIG_MAGIC):
        return module
    info_end = len(module) - len(_SIG_MAGIC)
    sig_len = int.from_bytes(module[info_end - 4:info_end], "big")
    return module[:info_end - 12 - sig_len]


def render_metadata_script() -> str:
    """The guest's /bin/fabric-metadata with its console markers filled in."""
    return (METADATA_SCRIPT.replace("__BEGIN__", USER_DATA_BEGIN).replace("__END__", USER_DATA_END)
            .replace("__SSH_KEYS__", SSH_KEYS_MARKER).replace("__METADATA_DIR__", METADATA_DIR))


def _builder_digest() -> str:
    text = (BUILDER_VERSION + render_init() + UDHCPC_SCRIPT + render_metadata_script() + POWER_BUTTON_SCRIPT
            + " ".join(MODULES) + KERNEL_CMDLINE + " ".join(SSH_PACKAGES + SSH_LIBRARIES)
            + "".join(ACCOUNT_FILES.values()))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _find_modules(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in root.rglob("*.ko*"):
        name = path.name.split(".ko")[0]
        if name in MODULES and name not in found:
            found[name] = path
    return found


def _busybox(work: Path) -> Path:
    host = Path("/usr/bin/busybox")
    if host.exists() and b"statically linked" in subprocess.run(
            ["file", "-L", str(host)], capture_output=True).stdout:
        return host
    if host.exists() and shutil.which("file") is None:
        return host  # busybox-static is what Debian installs at this path
    _run(["apt-get", "download", "busybox-static"], cwd=work)
    deb = next(work.glob("busybox-static_*.deb"))
    _run(["dpkg-deb", "-x", str(deb), str(work / "bb")])
    return work / "bb/bin/busybox"


def _packaged_file(root: Path, name: str) -> Path:
    """The file ``name`` (a soname or program) inside the unpacked packages under ``root``,
    following only links that stay inside it; GuestImageError when there is none."""
    inside = root.resolve()
    for path in sorted(root.rglob(name)):
        real = path.resolve()
        if real.is_relative_to(inside) and real.is_file():
            return real
    raise GuestImageError(f"none of the packages {' '.join(SSH_PACKAGES)} has {name}")


def _add_ssh_server(work: Path, root: Path) -> None:
    """dropbear and the shared objects it loads into the initramfs at ``root``; the packages
    downloaded to ``work``. GuestImageError when a library is missing (checked with the image's
    own loader, so a new dependency fails the build, not the guest)."""
    _run(["apt-get", "download", *SSH_PACKAGES], cwd=work)
    unpacked = work / "ssh"
    for package in SSH_PACKAGES:
        deb = next(work.glob(f"{package}_*.deb"))
        _run(["dpkg-deb", "-x", str(deb), str(unpacked)])
    (root / LIBRARY_DIR).mkdir(parents=True, exist_ok=True)
    (root / "lib64").mkdir(exist_ok=True)
    for soname in SSH_LIBRARIES:
        shutil.copy2(_packaged_file(unpacked, soname), root / LIBRARY_DIR / soname)
    shutil.copy2(_packaged_file(unpacked, LOADER), root / "lib64" / LOADER)
    shutil.copy2(_packaged_file(unpacked, "dropbear"), root / "bin/dropbear")
    listed = _run([str(root / "lib64" / LOADER), "--library-path", str(root / LIBRARY_DIR), "--list",
                   str(root / "bin/dropbear")])
    if "not found" in listed:
        raise GuestImageError(f"dropbear needs libraries missing from SSH_LIBRARIES:\n{listed}")
    for rel, text in ACCOUNT_FILES.items():
        (root / rel).write_text(text)
    (root / "root/.ssh").mkdir(mode=0o700, parents=True)
    (root / "root").chmod(0o700)
    (root / "root/.ssh/authorized_keys").symlink_to(f"{METADATA_DIR}/authorized_keys")
    (root / "etc/dropbear").mkdir()


def _build_initramfs(work: Path, kroot: Path, busybox: Path, out: Path) -> None:
    root = work / "initramfs"
    for sub in ("bin", "dev", "proc", "sys", "etc/acpi/PWRF", "lib/modules", "tmp", "run"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    _add_ssh_server(work, root)
    shutil.copy2(busybox, root / "bin/busybox")
    for applet in _run([str(busybox), "--list"]).split():
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    modules = _find_modules(kroot)
    missing = [m for m in MODULES if m not in modules]
    if missing:
        raise GuestImageError(f"kernel package lacks modules {missing}")
    for name, path in modules.items():
        target = root / "lib/modules" / f"{name}.ko"
        data = path.read_bytes()
        if path.name.endswith(".xz"):
            data = lzma.decompress(data)
        target.write_bytes(strip_module_signature(data))
    files = {
        "init": render_init(),
        "etc/udhcpc.script": UDHCPC_SCRIPT,
        "bin/fabric-metadata": render_metadata_script(),
        "etc/acpi/PWRF/00000080": POWER_BUTTON_SCRIPT,
    }
    for rel, text in files.items():
        (root / rel).write_text(text)
        (root / rel).chmod(0o755)
    listing = subprocess.run(["find", "."], cwd=root, check=True, capture_output=True).stdout
    with open(out, "wb") as fh:
        subprocess.run([str(busybox), "cpio", "-o", "-H", "newc"], cwd=root, input=listing,
                       stdout=fh, stderr=subprocess.DEVNULL, check=True)


def ensure_guest_image(cache_dir: str | Path | None = None) -> GuestImage:
    """Return the cached guest image, building it first if needed.

    Raises GuestImageError when apt, dpkg-deb or the kernel package is missing.
    """
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    digest = _builder_digest()
    manifest = cache / f"guest-{digest}.json"
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if manifest.exists():
            image = GuestImage(**json.loads(manifest.read_text()))
            if Path(image.kernel).exists() and Path(image.initrd).exists():
                return image
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            work = Path(tmp)
            package = kernel_package()
            _run(["apt-get", "download", package], cwd=work)
            deb = next(work.glob(f"{package}_*.deb"))
            _run(["dpkg-deb", "-x", str(deb), str(work / "kernel")])
            version = package.removeprefix("linux-image-")
            bzimage = (work / "kernel/boot" / f"vmlinuz-{version}").read_bytes()
            vmlinux = unpack_vmlinux(bzimage)
            # Names carry the digest and files appear by rename: running guests
            # map the kernel file, so one is never rewritten in place.
            kernel = cache / (f"vmlinux-{version}-{digest}" if vmlinux else f"vmlinuz-{version}")
            (work / "kernel.new").write_bytes(trim_vmlinux(vmlinux) if vmlinux else bzimage)
            os.replace(work / "kernel.new", kernel)
            initrd = cache / f"initrd-{version}-{digest}.img"
            _build_initramfs(work, work / "kernel/lib/modules", _busybox(work), work / "initrd.new")
            os.replace(work / "initrd.new", initrd)
        image = GuestImage(str(kernel), str(initrd), KERNEL_CMDLINE, version)
        manifest.write_text(json.dumps(dataclasses.asdict(image)))
        return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="cache directory (default: $FABRIC_GUEST_CACHE or ~/.cache/fabric/guest)")
    args = parser.parse_args(argv)
    try:
        image = ensure_guest_image(args.cache)
    except GuestImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(dataclasses.asdict(image), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
