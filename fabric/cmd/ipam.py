"""``fabric-ipam``: The IPAM worker: tenant-aware address allocation."""

import fabric.cmd.eventlet_entry  # noqa: F401, I001 - first: monkey patches before anything else loads

import sys

from fabric.cmd import common, launcher


@common.clean_errors
def main(argv: list[str] | None = None) -> int:
    return launcher.launch(("fabric-ipam",), argv, prog="fabric-ipam", description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
