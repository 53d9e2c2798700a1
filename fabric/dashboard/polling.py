"""How often an open page asks for fresh state, decided on the server.

A page polls ``…/status.json?since=FINGERPRINT&interval=MS``; the answer
carries the new fingerprint, the rows only when they changed, and the next
interval the page must wait. While nothing changes the interval grows from
:data:`MIN_INTERVAL_MS` by :data:`BACKOFF` up to :data:`MAX_INTERVAL_MS`
(Synnefo's UI backs off from 5 to 15 s the same way); a change snaps it back.
The server also answers from its memo when the same session asks again
sooner than :data:`MIN_INTERVAL_MS`, so a page (or several) can never make
more than one API listing per few seconds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

#: The first and shortest wait between two polls, and the longest.
MIN_INTERVAL_MS = 3000
MAX_INTERVAL_MS = 15000
#: Growth of the wait per poll that found nothing new.
BACKOFF = 1.5


def next_interval(current_ms: int | None, changed: bool) -> int:
    """The wait before the next poll: the minimum after a change (or with no
    valid current wait), else ``current`` grown by :data:`BACKOFF`, capped."""
    if changed or current_ms is None or current_ms < MIN_INTERVAL_MS:
        return MIN_INTERVAL_MS
    return min(MAX_INTERVAL_MS, int(current_ms * BACKOFF))


def parse_interval(raw: str | None) -> int | None:
    """The page's current wait from its query string; None when absent or not a number."""
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def fingerprint(items: Iterable[object]) -> str:
    """A short digest of what a page shows: equal exactly when the shown values are equal."""
    digest = hashlib.sha256(json.dumps(list(items), sort_keys=True, default=str).encode())
    return digest.hexdigest()[:24]
