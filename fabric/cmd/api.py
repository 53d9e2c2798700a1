"""``fabric-api``: the HTTP API worker (its manager serves the API and answers describe)."""

import fabric.cmd.eventlet_entry  # noqa: F401, I001 - first: monkey patches before anything else loads

import sys

from fabric import multiprocess_metrics

# Before prometheus_client loads: helper processes serve a share of the requests, and their
# counters reach this worker's /metrics through files in a directory they share (fabric.metrics).
multiprocess_metrics.share_with_helpers()

from fabric.cmd import common, launcher  # noqa: E402


@common.clean_errors
def main(argv: list[str] | None = None) -> int:
    return launcher.launch(("fabric-api",), argv, prog="fabric-api", description=__doc__)


def helper() -> int:
    """A helper process serving the API's port beside the worker that started it
    (``fabric.wsgi_processes``); not run by hand."""
    from fabric import wsgi_processes
    from fabric.api.processes import serve_helper

    return wsgi_processes.helper_main(sys.argv[1:], serve_helper)


if __name__ == "__main__":
    sys.exit(main())
