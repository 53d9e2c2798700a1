"""Kernel access for the network worker: namespace threads and the pyroute2 wrapper."""

from fabric.network.kernel.ip_lib import RTPROT_FABRIC, Kernel, check_name

__all__ = ["RTPROT_FABRIC", "Kernel", "check_name"]
