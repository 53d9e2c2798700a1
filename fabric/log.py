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


def remove() -> None:
    """Take the handler :func:`setup` installed off the root logger and close it (a no-op
    without one): records no longer reach the stream or file it was given."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_fabric", False):
            root.removeHandler(handler)
            handler.close()


def setup(level: str = "INFO", log_file: str = "") -> None:
    """Route fabric's logging to one handler with the request-id line format.

    Safe to call more than once: the handler is replaced, not added twice.
    """
    remove()
    root = logging.getLogger()
    handler: logging.Handler
    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler._fabric = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter(LINE_FORMAT))
    handler.addFilter(RequestIdFilter())
    root.addHandler(handler)
    root.setLevel(level)
    # Library chatter at INFO drowns the request trail.
    for noisy in ("amqp", "kombu", "alembic.runtime.migration", "sqlalchemy.engine"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
