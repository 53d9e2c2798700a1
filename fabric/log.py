"""Logging: one line format that carries the request id of the current context."""

from __future__ import annotations

import logging
import sys

from fabric import context

LINE_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s [%(request_id)s] %(message)s"


class RequestIdFilter(logging.Filter):
    """Stamps every record with the current request id ('-' outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            ctx = context.current()
            record.request_id = ctx.request_id if ctx else "-"
        return True


#: The level each logger :func:`setup` changed had before the first call since the last
#: :func:`remove` ("" is the root logger), so that :func:`remove` can put them back.
_levels_before_setup: dict[str, int] = {}

#: Libraries whose chatter at INFO drowns the request trail: :func:`setup` keeps them at
#: WARNING or above.
_NOISY_LOGGERS = ("amqp", "kombu", "alembic.runtime.migration", "sqlalchemy.engine")


def _remove_handler() -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_fabric", False):
            root.removeHandler(handler)
            handler.close()


def remove() -> None:
    """Undo :func:`setup` (a no-op without it): take its handler off the root logger and close
    it, so records no longer reach the stream or file it was given, and give the root logger
    and the library loggers it quietened back the levels they had before the first
    :func:`setup` call, so a launcher run and torn down in-process (a test) leaves logging as
    it found it."""
    _remove_handler()
    for name, level in _levels_before_setup.items():
        logging.getLogger(name).setLevel(level)
    _levels_before_setup.clear()


def setup(level: str = "INFO", log_file: str = "") -> None:
    """Route fabric's logging to one handler with the request-id line format.

    Safe to call more than once: the handler is replaced, not added twice, and
    :func:`remove` still restores the levels from before the first call.
    """
    _remove_handler()
    root = logging.getLogger()
    handler: logging.Handler
    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler._fabric = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter(LINE_FORMAT))
    handler.addFilter(RequestIdFilter())
    root.addHandler(handler)
    for name in ("", *_NOISY_LOGGERS):
        _levels_before_setup.setdefault(name, logging.getLogger(name).level)
    root.setLevel(level)
    for noisy in _NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
