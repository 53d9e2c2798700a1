"""``fabric-objectstore``: the S3-compatible object store (buckets and objects over HTTP)."""

import fabric.cmd.eventlet_entry  # noqa: F401, I001 - first: monkey patches before anything else loads

import sys

from fabric import multiprocess_metrics

# Before prometheus_client loads: the helper processes serve most requests, and their counters
# reach this worker's /metrics through files in a directory they share (fabric.metrics).
multiprocess_metrics.share_with_helpers()

from fabric.cmd import common, launcher  # noqa: E402


@common.clean_errors
def main(argv: list[str] | None = None) -> int:
    return launcher.launch(("fabric-objectstore",), argv, prog="fabric-objectstore", description=__doc__)


def helper() -> int:
    """A helper process serving the objectstore's listening socket beside the worker that started
    it (``fabric.wsgi_processes``); not run by hand."""
    from fabric import wsgi_processes
    from fabric.objectstore.processes import serve_helper

    return wsgi_processes.helper_main(sys.argv[1:], serve_helper)


if __name__ == "__main__":
    sys.exit(main())
