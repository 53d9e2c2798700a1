"""Where a message goes: a small, frozen :class:`Target`.

Which fields matter to whom:

==========  =========================  ==========================================
field       caller (RPCClient)         server (RPCServer)
==========  =========================  ==========================================
exchange    topic exchange to publish  exchange its queues are bound to
            (None: the transport's ``rpc.exchange``, "fabric" by default)
topic       required                   required
server      optional: one host only    the host whose ``<topic>.<host>`` it owns
fanout      True: every worker         (not used: every server has a fanout queue)
==========  =========================  ==========================================
"""

from __future__ import annotations

import dataclasses
import re

from fabric.exception import Invalid

#: Topic and host names: legible in ``rabbitmqctl list_queues`` and free of the
#: topic-exchange wildcards ``*`` and ``#``, which would route to strangers.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$")


def check_name(kind: str, value: str) -> str:
    """Return ``value`` if it is a usable topic or host name.

    Raises :class:`~fabric.exception.Invalid` naming the value and what is accepted.
    """
    if not isinstance(value, str) or not _NAME.match(value) or len(value) > 200:
        raise Invalid(
            reason=f"{kind} {value!r} is not a valid name: use letters, digits and _ . : - "
            "(at most 200 characters, no * or #)"
        )
    return value


@dataclasses.dataclass(frozen=True)
class Target:
    """A destination: ``topic`` (any worker), ``topic`` + ``server`` (that host) or fanout.

    Raises :class:`~fabric.exception.Invalid` for a bad topic, server or exchange name.
    """

    topic: str
    server: str | None = None
    fanout: bool = False
    exchange: str | None = None

    def __post_init__(self) -> None:
        check_name("topic", self.topic)
        if self.exchange is not None:
            check_name("exchange", self.exchange)
        if self.server is not None:
            check_name("server", self.server)

    @property
    def routing_key(self) -> str:
        """Routing key on the topic exchange: ``<topic>`` or ``<topic>.<server>``."""
        return f"{self.topic}.{self.server}" if self.server else self.topic

    @property
    def fanout_exchange(self) -> str:
        return f"{self.topic}_fanout"

    def replace(self, **changes) -> Target:
        return dataclasses.replace(self, **changes)

    def __str__(self) -> str:
        if self.fanout:
            return f"{self.topic} (fanout)"
        return self.routing_key
