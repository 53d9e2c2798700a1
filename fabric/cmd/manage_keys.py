"""``fabric-manage keys generate|rotate|retire|list``: the RPC signing keys (fabric.rpc.signing).

Run on the key host (the one holding every role's ``<role>.key``); give each worker
host only ``<role>.key`` and ``<role>.verify`` of the roles it runs, mode 0600.

Rotating a role: ``keys rotate ROLE`` adds a new key (the previous one stays accepted)
and rewrites every ``.verify`` file; copy the ``.verify`` files to every host first,
then ``ROLE.key`` to the role's hosts, restart them; when no message signed with the
old key can be in flight any more (``[signing] max_age``), ``keys retire ROLE`` drops
it and the ``.verify`` files are copied again: from then on it is refused.
"""

from __future__ import annotations

import argparse

from fabric import config
from fabric.cmd.tables import format_table
from fabric.exception import Invalid
from fabric.rpc import signing


def _roles(args: argparse.Namespace) -> list[str]:
    unknown = [role for role in args.roles if role not in signing.ROLES]
    if unknown:
        raise Invalid(reason=f"role(s) {', '.join(unknown)}: accepted roles are {', '.join(signing.ROLES)}")
    return list(args.roles) or list(signing.ROLES)


def keys_generate(settings: config.Settings, args: argparse.Namespace) -> int:
    """A key for every role (or those named) that has none; existing keys are kept."""
    key_dir = settings.signing_key_dir
    made = signing.generate(key_dir, _roles(args))
    print(f"Generated keys for {', '.join(made)} in {key_dir}." if made
          else f"Every role named already has a key in {key_dir}; nothing generated.")
    return 0


def keys_rotate(settings: config.Settings, args: argparse.Namespace) -> int:
    """A new signing key per role; the previous one is still accepted until retired."""
    key_dir = settings.signing_key_dir
    for role, kid in signing.rotate(key_dir, _roles(args)).items():
        print(f"{role}: new key {kid} signs from now on; the previous one is accepted until "
              f"`fabric-manage keys retire {role}`.")
    print(f"Copy the .verify files in {key_dir} to every host before the new .key files.")
    return 0


def keys_retire(settings: config.Settings, args: argparse.Namespace) -> int:
    """Drop every key but the newest of each role (or those named)."""
    key_dir = settings.signing_key_dir
    retired = signing.retire(key_dir, _roles(args))
    for role, kids in retired.items():
        print(f"{role}: retired {', '.join(kids)}; messages signed with it are refused once the "
              f".verify files are copied.")
    if not retired:
        print("No role had an old key to retire.")
    return 0


def keys_list(settings: config.Settings, args: argparse.Namespace) -> int:
    """One line per key: role, key id, created, and whether it signs or is only accepted."""
    key_dir = settings.signing_key_dir
    rows = []
    for role in _roles(args):
        keys = signing.read_masters(key_dir, role)
        for index, key in enumerate(keys):
            rows.append((role, key.kid, key.created, "signs" if index == len(keys) - 1 else "accepted"))
        if not keys:
            rows.append((role, None, None, "no key"))
    print(f"Keys in {key_dir} (signing {'on' if settings.signing.enabled else 'OFF'}):")
    print(format_table(("Role", "Key id", "Created (UTC)", "State"), rows), end="")
    return 0


def register(groups: argparse._SubParsersAction) -> None:
    """Add the ``keys`` group to fabric-manage."""
    keys = groups.add_parser("keys", help="RPC signing keys, one per role").add_subparsers(
        dest="action", required=True)
    for name, func, text in (
            ("generate", keys_generate, "make a key for every role that has none"),
            ("rotate", keys_rotate, "add a new signing key (the previous one stays accepted)"),
            ("retire", keys_retire, "drop every key but the newest (old signatures are refused)"),
            ("list", keys_list, "the keys of each role")):
        action = keys.add_parser(name, help=text)
        action.add_argument("roles", nargs="*", metavar="ROLE", help=f"among {', '.join(signing.ROLES)} (default: all)")
        action.set_defaults(func=func)
