"""Compute v2.1 subset (microversions 2.1 to fabric.api.versions.COMPUTE_MAX_VERSION; what
each adds: fabric.api.compute.microversion), mounted at ``/compute/v2.1``."""

from __future__ import annotations

import falcon

PREFIX = "/compute/v2.1"


def register(app: falcon.App) -> None:
    from fabric.api.compute import (
        actions,
        aggregates,
        availability_zones,
        diagnostics,
        flavor_extra_specs,
        flavors,
        hosts,
        images,
        keypairs,
        quotas,
        server_events,
        server_groups,
        server_ips,
        server_metadata,
        servers,
        tags,
        usage,
        volume_attachments,
    )

    for module in (flavors, flavor_extra_specs, images, keypairs, quotas, hosts, servers, actions, server_groups, server_metadata,
                   availability_zones, usage, server_events, tags, diagnostics, aggregates, volume_attachments,
                   server_ips):
        module.register(app, PREFIX)
