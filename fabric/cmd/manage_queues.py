"""``fabric-manage queues``: the broker as an operator sees it, through ``rabbitmqctl``.

``queues`` lists every queue of the vhost with its ready and unacknowledged
messages, consumers and dead letters (the depth of the matching
``<queue>.dead``), grouped by worker type. ``queues requeue-dead QUEUE``
moves the dead letters of QUEUE back onto it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Sequence

import amqp
import kombu

from fabric import config
from fabric.cmd.tables import format_table
from fabric.cmd.workers import WORKERS
from fabric.exception import Invalid, MessagingError, NotFound
from fabric.rpc.transport import ATTEMPT_HEADER, DEAD_REASON_HEADER

#: Seconds one rabbitmqctl invocation may take.
RABBITMQCTL_TIMEOUT = 60

#: A durable queue's dead letters live in ``<queue>.dead`` (bound to the
#: ``fabric.dlx`` exchange by fabric.rpc).
DEAD_SUFFIX = ".dead"

#: Headers recording a failed past (fabric.rpc's dead reason and attempt count,
#: a quorum queue's delivery count); cleared on requeue so the message gets its
#: full delivery budget again.
RESET_HEADERS = frozenset({DEAD_REASON_HEADER, ATTEMPT_HEADER, "x-fabric-queue", "x-delivery-count"})


def _amqp_url(settings: config.Settings) -> str:
    url = settings.rpc.transport_url
    if not url.startswith(("amqp://", "amqps://", "pyamqp://")):
        raise Invalid(reason=f"[rpc] transport_url is {url!r}: queue commands need a RabbitMQ "
                             "transport (amqp://user:pass@host:5672/vhost)")
    return url


def vhost_of(url: str) -> str:
    """The vhost a kombu URL names (``/`` when it names none)."""
    with kombu.Connection(url) as connection:
        return connection.virtual_host or "/"


def rabbitmqctl(args: argparse.Namespace, *command: str) -> list[dict]:
    """Run ``rabbitmqctl COMMAND --formatter json`` and parse its rows.

    Raises MessagingError naming the command and rabbitmqctl's complaint.
    """
    argv = [args.rabbitmqctl, "-q"]
    if args.node:
        argv += ["-n", args.node]
    argv += [*command, "--formatter", "json"]
    shown = " ".join(argv)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=RABBITMQCTL_TIMEOUT, check=False)
    except FileNotFoundError:
        raise MessagingError(reason=f"{args.rabbitmqctl} is not installed or not on PATH "
                                    "(use --rabbitmqctl to name it)") from None
    except subprocess.TimeoutExpired:
        raise MessagingError(reason=f"`{shown}` did not answer within {RABBITMQCTL_TIMEOUT}s") from None
    if done.returncode != 0:
        complaint = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[0]
        raise MessagingError(reason=f"`{shown}` failed (exit {done.returncode}): {complaint}")
    try:
        return json.loads(done.stdout or "[]")
    except json.JSONDecodeError:
        raise MessagingError(reason=f"`{shown}` printed something that is not JSON: "
                                    f"{done.stdout.strip()[:200]!r}") from None


def worker_type(queue: str) -> str:
    """The worker a queue belongs to (``fabric-compute`` for ``compute.host1``), else ``other``."""
    topic = queue.split(".", 1)[0]
    topic = topic.split("_fanout", 1)[0]
    for spec in WORKERS.values():
        if spec.topic == topic:
            return spec.binary
    return "other"


def queue_rows(queues: Sequence[dict]) -> list[tuple]:
    """(worker, queue, ready, unacked, consumers, dead letters) rows, dead-letter queues folded in."""
    by_name = {q["name"]: q for q in queues}
    rows = []
    for name, queue in by_name.items():
        if name.endswith(DEAD_SUFFIX) and name[: -len(DEAD_SUFFIX)] in by_name:
            continue  # shown as its live queue's dead letters
        dead = by_name.get(name + DEAD_SUFFIX)
        rows.append((worker_type(name), name, queue.get("messages_ready", 0),
                     queue.get("messages_unacknowledged", 0), queue.get("consumers", 0),
                     dead.get("messages", 0) if dead else "-"))
    rows.sort(key=lambda row: (row[0] == "other", row[0], row[1]))
    return rows


def queues_list(settings: config.Settings, args: argparse.Namespace) -> int:
    vhost = args.vhost or vhost_of(_amqp_url(settings))
    queues = rabbitmqctl(args, "list_queues", "-p", vhost, "name", "messages",
                         "messages_ready", "messages_unacknowledged", "consumers")
    if not queues:
        # rabbitmqctl lists a missing vhost as empty: tell the two apart.
        vhosts = {row["name"] for row in rabbitmqctl(args, "list_vhosts", "name")}
        if vhost not in vhosts:
            raise NotFound(kind="RabbitMQ vhost", ident=repr(vhost))
        print(f"No queues in vhost {vhost}.")
        return 0
    print(f"Queues in vhost {vhost}:")
    print(format_table(("Worker", "Queue", "Ready", "Unacked", "Consumers", "Dead letters"),
                       queue_rows(queues)), end="")
    return 0


def _is_death_header(key: str) -> bool:
    """Headers recording a past death; dropped so the message starts afresh."""
    return key.startswith(("x-death", "x-first-death", "x-last-death")) or key in RESET_HEADERS


def requeue_dead(url: str, queue: str, *, limit: int | None = None) -> int:
    """Move up to ``limit`` messages from ``<queue>.dead`` back to ``queue``; how many moved.

    Each message keeps its body and properties (minus the headers recording
    its death), is published persistent with a publisher confirm straight to
    ``queue``, and only then removed from the dead-letter queue: a crash
    midway duplicates at most one message, never loses one. Messages that die
    again while this runs are not moved twice in one run. Raises NotFound
    when either queue does not exist, Invalid for a negative limit.
    """
    if limit is not None and limit < 0:
        raise Invalid(reason=f"--limit is {limit}; use a number of messages, 0 or more")
    dead_queue = queue + DEAD_SUFFIX
    # confirm_publish: basic_publish then waits for the broker's ack (and raises on a
    # nack or a return), so a dead letter is removed only once its copy is safe.
    with kombu.Connection(url, transport_options={"confirm_publish": True}) as connection:
        try:
            connection.connect()
        except (OSError, *connection.connection_errors) as exc:
            raise MessagingError(reason=f"cannot reach the broker at {connection.as_uri()}: {exc}") from None
        for name in (queue, dead_queue):
            probe = connection.channel()
            try:
                probe.queue_declare(name, passive=True)
            except connection.channel_errors:
                raise NotFound(kind="Queue", ident=f"{name} in vhost {connection.virtual_host}") from None
            finally:
                if probe.is_open:
                    probe.close()
        channel = connection.channel()
        _, waiting, _ = channel.queue_declare(dead_queue, passive=True)
        budget = waiting if limit is None else min(limit, waiting)
        moved = 0
        while moved < budget:
            message = channel.basic_get(dead_queue, no_ack=False)
            if message is None:
                break
            properties = dict(message.properties)
            headers = {k: v for k, v in (properties.get("application_headers") or {}).items()
                       if not _is_death_header(k)}
            properties["application_headers"] = headers
            properties["delivery_mode"] = 2
            # Straight to the queue through the default exchange: it reaches
            # `queue` whatever the topic bindings are.
            try:
                channel.basic_publish(amqp.Message(message.body, **properties), exchange="",
                                      routing_key=queue, mandatory=True)
            except (amqp.exceptions.MessageNacked, *connection.connection_errors,
                    *connection.channel_errors) as exc:
                # Unacked, the dead letter goes back to QUEUE.dead when the channel closes.
                raise MessagingError(reason=f"the broker did not take a copy for {queue} ({exc}); "
                                            f"{moved} message(s) moved, the rest are still in {dead_queue}") from None
            channel.basic_ack(message.delivery_tag)
            moved += 1
        channel.close()
    return moved


def queues_requeue_dead(settings: config.Settings, args: argparse.Namespace) -> int:
    url = _amqp_url(settings)
    queue = args.queue[: -len(DEAD_SUFFIX)] if args.queue.endswith(DEAD_SUFFIX) else args.queue
    if args.vhost:
        url = kombu.Connection(url).clone(virtual_host=args.vhost).as_uri(include_password=True)
    moved = requeue_dead(url, queue, limit=args.limit)
    print(f"Moved {moved} dead-lettered message(s) from {queue}{DEAD_SUFFIX} back to {queue}.")
    return 0


def register(groups: argparse._SubParsersAction) -> None:
    """Add the ``queues`` group to fabric-manage."""
    queues = groups.add_parser("queues", help="RabbitMQ queues (through rabbitmqctl)")
    queues.add_argument("--vhost", help="RabbitMQ vhost (default: the one in [rpc] transport_url)")
    queues.add_argument("--rabbitmqctl", default="rabbitmqctl", metavar="PATH", help="rabbitmqctl to run")
    queues.add_argument("--node", help="RabbitMQ node name passed to rabbitmqctl -n")
    queues.set_defaults(func=queues_list)
    actions = queues.add_subparsers(dest="action", metavar="ACTION")
    requeue = actions.add_parser("requeue-dead", help="move QUEUE's dead letters (QUEUE.dead) back to QUEUE")
    requeue.add_argument("queue", help="the live queue, e.g. compute or compute.host1")
    requeue.add_argument("--vhost", default=argparse.SUPPRESS,
                         help="RabbitMQ vhost (default: the one in [rpc] transport_url)")
    requeue.add_argument("--limit", type=int, default=None, metavar="N", help="move at most N messages")
    requeue.set_defaults(func=queues_requeue_dead)
