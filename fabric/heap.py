"""What a long-lived process does with the objects it made while starting."""

from __future__ import annotations

import gc
import logging

LOG = logging.getLogger(__name__)
_frozen = False


def freeze_startup_objects() -> None:
    """Move every object alive now out of the collector's generations (``gc.freeze()``), once
    per process; a forked child inherits the frozen objects and this flag with them.

    Call it once the process has started: what is alive then (modules, SQLAlchemy's mappers
    and compiled statements, routes, host states) lives as long as the process, and without
    this every full collection walks all of it again, tens of milliseconds inside whichever
    request or message it interrupts. Garbage is collected first, so none is kept; only once,
    so that a process serving several managers, or a test starting many, does not freeze each
    one's garbage too.
    """
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()
        LOG.info("Froze the %d objects alive after start-up out of the garbage collector's reach",
                 gc.get_freeze_count())
