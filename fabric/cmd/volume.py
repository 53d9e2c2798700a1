"""``fabric-volume``: The volume worker: this host's volumes as qcow2 files, served over NBD."""

import fabric.cmd.eventlet_entry  # noqa: F401, I001 - first: monkey patches before anything else loads

import sys

from fabric.cmd import common, launcher


@common.clean_errors
def main(argv: list[str] | None = None) -> int:
    return launcher.launch(("fabric-volume",), argv, prog="fabric-volume", description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
