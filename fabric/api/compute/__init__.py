"""Compute v2.1 subset (microversion 2.1 only), mounted at ``/compute/v2.1``."""

from __future__ import annotations

import falcon

PREFIX = "/compute/v2.1"


def register(app: falcon.App) -> None:
    from fabric.api.compute import (
        actions,
        availability_zones,
        flavors,
        hosts,
        keypairs,
        quotas,
        server_events,
        server_groups,
        server_metadata,
        servers,
        usage,
    )

    for module in (flavors, keypairs, quotas, hosts, servers, actions, server_groups, server_metadata,
                   availability_zones, usage, server_events):
        module.register(app, PREFIX)
