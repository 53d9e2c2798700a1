"""``fabric-dashboard``: the web dashboard on its own, a client of the API.

It needs the API's address (``[dashboard] api_url``, else the ``[api]``
section's) and nothing else: no database, no broker. ``fabric-all`` runs the
same dashboard as one of its workers.
"""

import fabric.cmd.eventlet_entry  # noqa: F401, I001 - first: monkey patches before anything else loads

import argparse
import logging
import signal
import sys

import eventlet.event

from fabric.cmd import common
from fabric.dashboard import server as dashboard

LOG = logging.getLogger(__name__)


@common.clean_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fabric-dashboard", description="Serve the fabric web dashboard.")
    common.add_config_argument(parser)
    args = parser.parse_args(argv)
    settings = common.load_settings(args)
    stop_serving = dashboard.start(settings)
    stopping = eventlet.event.Event()

    def stop(signum, frame):
        if not stopping.ready():
            stopping.send(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signum = stopping.wait()
    LOG.info("fabric-dashboard stopping on signal %s", signum)
    stop_serving()
    return 0


if __name__ == "__main__":
    sys.exit(main())
