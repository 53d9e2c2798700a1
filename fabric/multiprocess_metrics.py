"""Metrics of a worker that serves from several processes (the objectstore and its helpers).

prometheus_client's multiprocess mode keeps each process's counters in a file of a
directory named by ``PROMETHEUS_MULTIPROC_DIR`` and sums them when the worker is
scraped. The variable must be set before prometheus_client is first imported, so
the objectstore's launcher calls :func:`share_with_helpers` before it imports the
rest; the helpers it starts inherit the variable and write into the same directory.
Counters of a helper that exited stay counted (they are totals). The worker that
created the directory removes it when it exits.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def share_with_helpers() -> str:
    """Make this process (and what it starts) count metrics in a shared directory; its path.

    A helper inherits the directory of its parent; a worker creates its own.
    """
    if os.environ.get(VARIABLE):
        return os.environ[VARIABLE]
    if "prometheus_client" in sys.modules:
        raise RuntimeError("share_with_helpers() must run before prometheus_client is imported")
    directory = tempfile.mkdtemp(prefix="fabric-metrics-")
    os.environ[VARIABLE] = directory
    owner = os.getpid()
    atexit.register(lambda: os.getpid() == owner and shutil.rmtree(directory, ignore_errors=True))
    return directory


def shared() -> bool:
    """Whether this process counts in a shared directory."""
    return bool(os.environ.get(VARIABLE))
