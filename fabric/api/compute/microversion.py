"""Which Compute microversion a request asked for, and the one table of what each adds.

The middleware parses the request's ``OpenStack-API-Version`` (or
``X-OpenStack-Nova-API-Version``) header into ``req.context.compute_version``
(fabric.api.versions.parse_compute_version); resources ask :func:`at_least`
before showing or accepting what a later microversion brought, so a client
asking for 2.1 gets exactly Nova's 2.1 documents.
"""

from __future__ import annotations

#: (major, minor) at which each feature appears, as in Nova's API history.
LOCKED = (2, 9)               # "locked" in server documents
SOFT_POLICIES = (2, 15)       # soft-affinity / soft-anti-affinity server groups
DESCRIPTION = (2, 19)         # server "description" (create, update, show)
TAGS = (2, 26)                # server tags: /servers/{id}/tags, "tags" in documents, ?tags= filters
LOCKED_REASON = (2, 73)       # "locked_reason" (newer than fabric serves: never shown)


def of(req) -> tuple[int, int]:
    """The request's microversion (2.1 when it named none)."""
    return getattr(req.context, "compute_version", None) or (2, 1)


def at_least(req, version: tuple[int, int]) -> bool:
    """Whether the request asked for ``version`` or later."""
    return of(req) >= version


def text(version: tuple[int, int]) -> str:
    """``(2, 19)`` as "2.19", for messages."""
    return f"{version[0]}.{version[1]}"
