"""The network worker as it runs for real: monkey-patched, its driver in a namespace, the
database over green psycopg; it reconciles from the database and serves metadata.

    python -m tests.functional.metadata.green_worker <netns> <database url> <data_dir>

Prints ``ready`` and the host's metadata listeners as one JSON line, then serves
until stdin closes.
"""

import fabric.cmd.eventlet_entry  # noqa: F401, I001 - first: green (and psycopg's wait) as in every launcher

import json
import sys

from eventlet.green import os as green_os

from fabric.db import Database
from fabric.network.manager import NetworkManager
from tests.functional.network.conftest import host_settings


def main() -> None:
    netns, url, data_dir = sys.argv[1:4]
    settings = host_settings("h1", "192.168.77.1", data_dir, namespace=netns)
    manager = NetworkManager(settings, db=Database(url))
    manager.init_host()
    print("ready", json.dumps(manager.driver.describe()["metadata"]), flush=True)
    # Green read: the hub keeps serving guests while this waits.
    while green_os.read(sys.stdin.fileno(), 1):
        pass
    manager.cleanup_host()


if __name__ == "__main__":
    main()
