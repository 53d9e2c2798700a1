"""``fabric-manage queues``: the broker as an operator sees it, through ``rabbitmqctl``.

``queues`` lists every queue of the vhost with its ready and unacknowledged
messages, consumers and dead letters (the depth of the matching
``<queue>.dead``), grouped by worker type. ``queues requeue-dead QUEUE``
moves the dead letters of QUEUE back onto it, re-signing those whose signature
checks with this host's keys (``[signing] key_dir``; on the key host, every
role's) and leaving, with the reason, those that do not. The work is done by
:mod:`fabric.rpc.queues`, which the admin API's ``/fabric/v1/queues`` uses too.
"""

from __future__ import annotations

import argparse

from fabric import config
from fabric.cmd.tables import format_table
from fabric.rpc import queues, signing


def _ctl(args: argparse.Namespace) -> queues.Rabbitmqctl:
    return queues.Rabbitmqctl(program=args.rabbitmqctl, node=args.node)


def queues_list(settings: config.Settings, args: argparse.Namespace) -> int:
    vhost = args.vhost or queues.vhost_of(queues.amqp_url(settings))
    rows = queues.list_queues(_ctl(args), vhost)
    if not rows:
        print(f"No queues in vhost {vhost}.")
        return 0
    print(f"Queues in vhost {vhost}:")
    print(format_table(("Worker", "Queue", "Ready", "Unacked", "Consumers", "Dead letters"),
                       [(r.worker, r.name, r.ready, r.unacked, r.consumers, "-" if r.dead is None else r.dead)
                        for r in rows]), end="")
    return 0


def queues_requeue_dead(settings: config.Settings, args: argparse.Namespace) -> int:
    url = queues.amqp_url(settings)
    queue = queues.live_queue(args.queue)
    if args.vhost:
        url = queues.with_vhost(url, args.vhost)
    keyring = signing.from_settings(settings)
    done = queues.requeue_dead(url, queue, limit=args.limit, keyring=keyring)
    dead = f"{queue}{queues.DEAD_SUFFIX}"
    resigned = f" ({done.resigned} re-signed with a fresh timestamp)" if done.resigned else ""
    print(f"Moved {done.moved} dead-lettered message(s) from {dead} back to {queue}{resigned}.")
    if done.left:
        print(f"Left {sum(done.left.values())} in {dead} (signatures checked with the keys in {keyring.source}):")
        for code, count in sorted(done.left.items()):
            print(f"  {count} {code}: {done.why[code]}")
    return 0


def register(groups: argparse._SubParsersAction) -> None:
    """Add the ``queues`` group to fabric-manage."""
    queues = groups.add_parser("queues", help="RabbitMQ queues (through rabbitmqctl)")
    queues.add_argument("--vhost", help="RabbitMQ vhost (default: the one in [rpc] transport_url)")
    queues.add_argument("--rabbitmqctl", default="rabbitmqctl", metavar="PATH", help="rabbitmqctl to run")
    queues.add_argument("--node", help="RabbitMQ node name passed to rabbitmqctl -n")
    queues.set_defaults(func=queues_list)
    actions = queues.add_subparsers(dest="action", metavar="ACTION")
    requeue = actions.add_parser("requeue-dead", help="move QUEUE's dead letters (QUEUE.dead) back to QUEUE, "
                                 "re-signed where their signature checks with this host's keys")
    requeue.add_argument("queue", help="the live queue, e.g. compute or compute.host1")
    requeue.add_argument("--vhost", default=argparse.SUPPRESS,
                         help="RabbitMQ vhost (default: the one in [rpc] transport_url)")
    requeue.add_argument("--limit", type=int, default=None, metavar="N", help="move at most N messages")
    requeue.set_defaults(func=queues_requeue_dead)
