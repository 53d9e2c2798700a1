"""The one SQL database: engine, sessions, models and migrations."""

from fabric.db.engine import Database, normalize_url

__all__ = ["Database", "normalize_url"]
