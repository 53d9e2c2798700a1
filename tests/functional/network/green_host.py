"""Run the Linux driver in a monkey-patched eventlet process (as the real worker does).

    python -m tests.functional.network.green_host <netns> <data_dir>

Prints one JSON line: whether a green thread ran while the namespace thread was
busy (the hub was not blocked), and the devices made by concurrent green plugs.
"""

import fabric.cmd.eventlet_entry  # noqa: F401, I001 - first: green (and psycopg's wait) as in every launcher

import json
import sys

import eventlet
from eventlet import patcher

from fabric.network.drivers.linux import LinuxDriver
from fabric.network.model import EndpointSpec, NetworkSpec
from tests.functional.network.conftest import host_settings

native_threading = patcher.original("threading")


def main() -> None:
    netns, data_dir = sys.argv[1:3]
    driver = LinuxDriver(host_settings("g1", "192.168.77.1", data_dir), netns=netns)
    driver.setup_network(NetworkSpec(id="net-g", network_type="vxlan", segmentation_id=900))

    # The namespace thread waits for an event only a green thread sets: if running
    # kernel work blocked the hub, the green thread could never set it.
    released = native_threading.Event()
    busy = eventlet.spawn(driver.kernel._thread.run, lambda local: released.wait(10))
    eventlet.spawn(released.set).wait()
    hub_free = busy.wait()

    pool = eventlet.GreenPool(8)
    results = list(pool.imap(lambda i: driver.plug(EndpointSpec(f"ep-{i}", "net-g", f"02:00:00:00:99:{i:02x}")),
                             range(16)))
    devices = sorted(link["name"] for link in driver.kernel.links(driver.names.prefix)
                     if link["master"] == driver.bridge_of(driver.state.networks["net-g"])
                     and link["kind"] == "tun")
    print(json.dumps({"hub_free": hub_free, "plugged": sorted(r["device"] for r in results),
                      "enslaved": devices}), flush=True)


if __name__ == "__main__":
    main()
