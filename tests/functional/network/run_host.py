"""A network worker stand-in for the restart tests: a fresh process that converges one
simulated host to a state read from a JSON file, says ``ready``, then waits to be killed.

    python -m tests.functional.network.run_host <netns> <host> <tunnel> <data_dir> <state.json>
"""

from __future__ import annotations

import json
import sys

from fabric.network.drivers.linux import LinuxDriver
from fabric.network.model import HostState
from tests.functional.network.conftest import host_settings


def main() -> None:
    netns, host, tunnel, data_dir, state_path = sys.argv[1:6]
    with open(state_path) as handle:
        state = HostState.from_dict(json.load(handle))
    driver = LinuxDriver(host_settings(host, tunnel, data_dir), netns=netns)
    summary = driver.sync(state)
    print("ready", json.dumps(summary), flush=True)
    sys.stdin.read()  # until killed (or stdin closes)


if __name__ == "__main__":
    main()
