"""A long-lived `openstack` CLI process for the functional tests.

Starting python-openstackclient costs seconds of imports and entry-point
scanning per command; a test that runs twenty commands spent most of its time
there. This process imports it once, then runs each command it is sent through
the CLI's own entry point (``openstackclient.shell.main``, what the
``openstack`` script calls) with that command's argv and ``OS_*`` environment,
and answers with its exit code, stdout and stderr. Every command still goes
over HTTP to the API like the shipped script.

One change from the script: ``--wait`` polls every half second rather than every
five (osc-lib's ``wait_for_status`` default), since the fake driver gets a server
to ACTIVE in well under a second; the CLI still waits for the same status.

Protocol: one JSON object per line on stdin, ``{"seq": int, "argv": [...], "env": {...}}``;
one JSON object per line on stdout, ``{"seq": int, "rc": int, "stdout": str, "stderr": str}``
with the request's ``seq``. It exits at end of input.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import sys


def _forget_clients() -> None:
    """Drop the service clients that osc-lib caches on the ClientManager *class* (one
    ``ClientCache`` descriptor per service): a fresh ``openstack`` process starts without
    them, and reusing one would send the next command with the previous user's session."""
    from openstackclient.common.clientmanager import ClientManager
    from osc_lib.clientmanager import ClientCache

    for cls in ClientManager.__mro__:
        for value in vars(cls).values():
            if isinstance(value, ClientCache):
                value._handle = None


def run_one(argv: list[str], env: dict[str, str]) -> dict:
    """Run one CLI command as the ``openstack`` script would, capturing its output."""
    from openstackclient import shell

    _forget_clients()

    saved = dict(os.environ)
    for key in [k for k in os.environ if k.startswith("OS_")]:
        del os.environ[key]
    os.environ.update(env)
    root = logging.getLogger()
    # cliff adds a console handler on every run; without this they pile up across commands.
    for handler in list(root.handlers):
        root.removeHandler(handler)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = shell.main(list(argv))
            except SystemExit as exc:  # argparse errors and --help exit
                rc = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return {"rc": rc or 0, "stdout": out.getvalue(), "stderr": err.getvalue()}


#: Seconds between the polls of ``server create/reboot --wait`` (osc-lib's default is 5).
POLL_SECONDS = 0.5


def _poll_sooner() -> None:
    from osc_lib import utils

    original = utils.wait_for_status

    @functools.wraps(original)
    def wait_for_status(*args, **kwargs):
        kwargs.setdefault("sleep_time", POLL_SECONDS)
        return original(*args, **kwargs)

    utils.wait_for_status = wait_for_status


def main() -> int:
    from openstackclient import shell  # noqa: F401 - import once, up front

    _poll_sooner()

    answer = sys.stdout
    sys.stdout = sys.stderr  # only the protocol goes to the real stdout
    print(json.dumps({"ready": True}), file=answer, flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        reply = run_one(request["argv"], request["env"]) | {"seq": request["seq"]}
        print(json.dumps(reply), file=answer, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
