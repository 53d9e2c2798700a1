"""``fabric-manage status``: the cloud's health on one screen.

Prints services, queues with a backlog or dead letters, servers stuck or in
error, the hosts' capacity in use and the schema revision (see
:mod:`fabric.status`), then what needs a person. Exit status 0 when nothing
does, 1 when something does (so a cron job or a monitoring check can call it).
"""

from __future__ import annotations

import argparse

from fabric import config, status
from fabric.cmd import launcher
from fabric.cmd.tables import format_table
from fabric.rpc import queues

#: Exit status when something needs a person.
EXIT_ATTENTION = 1


def show_status(settings: config.Settings, args: argparse.Namespace) -> int:
    db = launcher.open_database(settings, sync_if_empty=False)
    try:
        report = status.gather(settings, db, ctl=queues.Rabbitmqctl(program=args.rabbitmqctl, node=args.node),
                               stuck_after=args.stuck_after)
    finally:
        db.dispose()
    for section in report.sections:
        print(f"{section.title}:")
        if section.rows:
            print(format_table(section.headers, section.rows), end="")
        if section.note:
            print(f"  {section.note}")
        print()
    if not report.problems:
        print("All is well.")
        return 0
    print(f"Needs attention ({len(report.problems)}):")
    for problem in report.problems:
        print(f"  - {problem}")
    return EXIT_ATTENTION


def register(groups: argparse._SubParsersAction) -> None:
    """Add ``status`` to fabric-manage."""
    parser = groups.add_parser("status", help="services, queues, stuck servers, capacity and schema at a glance; "
                                              "exit 1 when something needs a person")
    parser.add_argument("--stuck-after", type=float, default=status.DEFAULT_STUCK_AFTER, metavar="SECONDS",
                        help="a server whose task started longer ago is stuck (default %(default)gs)")
    parser.add_argument("--rabbitmqctl", default="rabbitmqctl", help="the rabbitmqctl program (default: on PATH)")
    parser.add_argument("--node", help="the RabbitMQ node rabbitmqctl talks to (-n)")
    parser.set_defaults(func=show_status)
