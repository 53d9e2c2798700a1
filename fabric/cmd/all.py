"""``fabric-all``: every worker in one process (the embedded default), and the dashboard.

On the embedded defaults (memory:// transport, SQLite under data_dir, fake
drivers) it needs nothing else running, and creates the schema itself when the
SQLite database is empty.
"""

import fabric.cmd.eventlet_entry  # noqa: F401, I001 - first: monkey patches before anything else loads

import sys

from fabric import multiprocess_metrics

# Before prometheus_client loads: the API's and the objectstore's helper processes (with
# [api] or [objectstore] workers above one) count in files this process's /metrics sums.
multiprocess_metrics.share_with_helpers()

from fabric.cmd import common, launcher, workers  # noqa: E402
from fabric.dashboard import server as dashboard  # noqa: E402


@common.clean_errors
def main(argv: list[str] | None = None) -> int:
    return launcher.launch(workers.ALL_IN_ONE, argv, prog="fabric-all",
                           description="Run every fabric worker (and the dashboard) in one process.",
                           embedded=True, beside=(dashboard.start,))


if __name__ == "__main__":
    sys.exit(main())
