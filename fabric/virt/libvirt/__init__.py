"""The libvirt virt driver (QEMU/KVM guests; libvirt's test driver in tests)."""
