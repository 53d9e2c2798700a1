"""Simulated hypervisor hosts on one machine (``tools/hosts``, ``tools/run --hosts N``, tests).

Each host is a network namespace of its own holding its data plane, and runs
its own ``fabric-compute`` (libvirt, ``qemu:///embed`` so QEMU and its taps
live in the namespace) and ``fabric-network`` (linux driver) processes. An
underlay bridge, in a namespace of its own, joins the hosts; the root
namespace never gets an address on it. Control traffic reaches the host
processes over loopback only: a forwarder per host listens on the broker's
loopback port inside the namespace and connects to it in the root namespace;
PostgreSQL is reached over its unix socket.

- :mod:`fabric.sim.netns`: namespaces, the processes inside them, process identity.
- :mod:`fabric.sim.forwarder`: the loopback forwarder (its own process).
- :mod:`fabric.sim.hosts`: standing hosts up, taking them down, cleaning up after a crash,
  and killing or restarting one worker of one host (crash tests).
- :mod:`fabric.sim.cli`: the ``tools/hosts`` command.
"""
