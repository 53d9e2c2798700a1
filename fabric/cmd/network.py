"""``fabric-network``: The network worker of this host: bridges, segments, DHCP, NAT."""

import fabric.cmd.eventlet_entry  # noqa: F401, I001 - first: monkey patches before anything else loads

import sys

from fabric.cmd import common, launcher


@common.clean_errors
def main(argv: list[str] | None = None) -> int:
    return launcher.launch(("fabric-network",), argv, prog="fabric-network", description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
