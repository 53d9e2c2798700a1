"""The datacenter layout and its numbered hosts, tenants and segments, in the database.

Every number is checked against its bit width before anything is written,
and assigned lowest-free first; the unique constraints on (datacenter,
number) and (tenant, number) are what keep two workers from handing out the
same number (a lost race is retried). Adding a host, tenant or segment that
already exists returns it unchanged, so every operation is safe to repeat.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from fabric.db import Database
from fabric.db.models import AddressAllocation, AddressPool, Datacenter, Segment, Tenant, TopologyHost
from fabric.exception import Conflict, NotFound, NumberExhausted
from fabric.ipam.layout import Layout
from fabric.network.model import HostSpec
from fabric.rpc.target import check_name

DEFAULT_DATACENTER = "default"


def layout_of(row: Datacenter) -> Layout:
    return Layout.build(row.prefix, row.host_bits, row.tenant_bits, row.segment_bits, row.endpoint_bits)


def _datacenter_dict(row: Datacenter, layout: Layout) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, **layout.to_dict()}


def host_dict(row: TopologyHost, layout: Layout) -> dict[str, Any]:
    """A host as the network worker needs it: its number, block and gateway."""
    return {
        "id": row.id, "name": row.name, "number": row.number,
        "block": str(layout.host_block(row.number)),
        "gateway": str(layout.host_gateway(row.number)),
        "tunnel_address": row.tunnel_address, "agent_address": row.agent_address,
    }


def _tenant_dict(row: Tenant) -> dict[str, Any]:
    return {"id": row.id, "project_id": row.project_id, "number": row.number}


def _segment_dict(row: Segment, tenant: Tenant) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "number": row.number,
            "project_id": tenant.project_id, "tenant_number": tenant.number}


def _host_by_name(datacenter_id: int, name: str) -> sa.Select[tuple[TopologyHost]]:
    return sa.select(TopologyHost).where(TopologyHost.datacenter_id == datacenter_id, TopologyHost.name == name)


def _tenant_by_project(datacenter_id: int, project_id: str) -> sa.Select[tuple[Tenant]]:
    return sa.select(Tenant).where(Tenant.datacenter_id == datacenter_id, Tenant.project_id == project_id)


class Topology:
    """Datacenter, host, tenant and segment operations on one database."""

    def __init__(self, db: Database, max_retries: int = 20) -> None:
        self.db = db
        self.max_retries = max_retries

    # --- datacenter -----------------------------------------------------------------

    def configure_datacenter(self, name: str, prefix: str, host_bits: int, tenant_bits: int,
                             segment_bits: int, endpoint_bits: int) -> dict[str, Any]:
        """Create the datacenter's layout, or change it while nothing is numbered in it.

        Raises LayoutInvalid (nothing written) for a bad prefix or widths, and
        Conflict when a different layout is asked for once hosts or tenants exist.
        """
        layout = Layout.build(prefix, host_bits, tenant_bits, segment_bits, endpoint_bits)
        values = {"prefix": str(layout.prefix), "host_bits": layout.host_bits, "tenant_bits": layout.tenant_bits,
                  "segment_bits": layout.segment_bits, "endpoint_bits": layout.endpoint_bits}
        for _ in range(self.max_retries):
            try:
                with self.db.begin() as session:
                    row = session.scalars(sa.select(Datacenter).where(Datacenter.name == name)).first()
                    if row is None:
                        row = Datacenter(name=name, **values)
                        session.add(row)
                        session.flush()
                        return _datacenter_dict(row, layout)
                    if all(getattr(row, key) == value for key, value in values.items()):
                        return _datacenter_dict(row, layout)
                    numbered = session.scalar(sa.select(sa.func.count()).select_from(TopologyHost)
                                              .where(TopologyHost.datacenter_id == row.id))
                    numbered += session.scalar(sa.select(sa.func.count()).select_from(Tenant)
                                               .where(Tenant.datacenter_id == row.id))
                    if numbered:
                        raise Conflict(reason=(f"datacenter {name} already has layout {layout_of(row).to_dict()} "
                                               f"and {numbered} hosts/tenants numbered in it; remove them first"))
                    # Compare-and-swap on the old layout: a concurrent change makes this a no-op.
                    changed = session.execute(
                        sa.update(Datacenter).where(Datacenter.id == row.id, Datacenter.prefix == row.prefix,
                                                    Datacenter.host_bits == row.host_bits,
                                                    Datacenter.tenant_bits == row.tenant_bits,
                                                    Datacenter.segment_bits == row.segment_bits,
                                                    Datacenter.endpoint_bits == row.endpoint_bits)
                        .values(**values).execution_options(synchronize_session=False)).rowcount
                    if changed:
                        return {"id": row.id, "name": name, **layout.to_dict()}
            except sa.exc.IntegrityError:
                continue
        raise Conflict(reason=f"datacenter {name} kept changing under this request; try again")

    def datacenter(self, name: str = DEFAULT_DATACENTER) -> tuple[Datacenter, Layout]:
        """The datacenter row and its layout; NotFound if it was never configured."""
        with self.db.begin() as session:
            row = session.scalars(sa.select(Datacenter).where(Datacenter.name == name)).first()
        if row is None:
            raise NotFound(kind="datacenter", ident=name)
        return row, layout_of(row)

    def describe_datacenter(self, name: str = DEFAULT_DATACENTER) -> dict[str, Any]:
        """The layout and every host (with its block and gateway)."""
        row, layout = self.datacenter(name)
        return {**_datacenter_dict(row, layout), "hosts": self.list_hosts(name)}

    # --- numbering ------------------------------------------------------------------

    def _assign(self, *, kind: str, scope: str, layout: Layout, model: type, scope_filter: Any,
                number: int | None, existing: Callable[[sa.orm.Session], Any],
                build: Callable[[int], Any]) -> Any:
        """Find or create a numbered row: explicit numbers are width-checked, otherwise
        the lowest free number is taken; a lost race on the unique constraint retries."""
        if number is not None:
            layout.check(kind, number)
        high = (1 << layout.bits(kind)) - 1
        for _ in range(self.max_retries):
            try:
                with self.db.begin() as session:
                    found = existing(session)
                    if found is not None:
                        if number is not None and found.number != number:
                            raise Conflict(reason=f"{kind} already exists in {scope} with number {found.number}, not {number}")
                        return found
                    if number is None:
                        taken = session.scalars(sa.select(model.number).where(scope_filter).order_by(model.number)).all()
                        chosen = next((n for n, t in enumerate(taken) if n != t), len(taken))
                        if chosen > high:
                            raise NumberExhausted(kind=kind, scope=scope, bits=layout.bits(kind),
                                                  capacity=high + 1, high=high)
                    else:
                        chosen = number
                        holder = session.scalars(sa.select(model).where(scope_filter, model.number == number)).first()
                        if holder is not None:
                            raise Conflict(reason=f"{kind} number {number} in {scope} is already taken")
                    row = build(chosen)
                    session.add(row)
                    session.flush()
                    return row
            except sa.exc.IntegrityError:
                continue
        raise Conflict(reason=f"{kind} numbering in {scope} lost {self.max_retries} races in a row; try again")

    # --- hosts ----------------------------------------------------------------------

    def add_host(self, name: str, datacenter: str = DEFAULT_DATACENTER, number: int | None = None,
                 tunnel_address: str | None = None, agent_address: str | None = None) -> dict[str, Any]:
        """Number a host (lowest free, or ``number``) and return it with its block.

        Idempotent by name. Raises Invalid (nothing written) when ``name`` is not a
        usable host name or ``tunnel_address`` not one the network workers can
        use, NumberOutOfRange, NumberExhausted or Conflict.
        """
        check_name("host", name)  # it names the host's queues (network.<host>, compute.<host>)
        if tunnel_address is not None:
            HostSpec(name, tunnel_address)  # the network workers' rule for a peer's address
        dc, layout = self.datacenter(datacenter)
        row = self._assign(
            kind="host", scope=f"datacenter {datacenter}", layout=layout, model=TopologyHost,
            scope_filter=TopologyHost.datacenter_id == dc.id, number=number,
            existing=lambda s: s.scalars(_host_by_name(dc.id, name)).first(),
            build=lambda n: TopologyHost(datacenter_id=dc.id, name=name, number=n,
                                         tunnel_address=tunnel_address, agent_address=agent_address))
        return host_dict(row, layout)

    def host(self, name: str, datacenter: str = DEFAULT_DATACENTER) -> tuple[TopologyHost, Layout]:
        dc, layout = self.datacenter(datacenter)
        with self.db.begin() as session:
            row = session.scalars(_host_by_name(dc.id, name)).first()
        if row is None:
            raise NotFound(kind="host", ident=f"{name} (datacenter {datacenter})")
        return row, layout

    def list_hosts(self, datacenter: str = DEFAULT_DATACENTER) -> list[dict[str, Any]]:
        dc, layout = self.datacenter(datacenter)
        with self.db.begin() as session:
            rows = session.scalars(sa.select(TopologyHost).where(TopologyHost.datacenter_id == dc.id)
                                   .order_by(TopologyHost.number)).all()
        return [host_dict(row, layout) for row in rows]

    def remove_host(self, name: str, datacenter: str = DEFAULT_DATACENTER) -> bool:
        """Remove a host; False if it was not there. Conflict while it holds addresses."""
        dc, _ = self.datacenter(datacenter)
        with self.db.begin() as session:
            row = session.scalars(_host_by_name(dc.id, name)).first()
            if row is None:
                return False
            self._refuse_if_allocated(session, AddressPool.host_id == row.id, f"host {name}")
            session.delete(row)
        return True

    @staticmethod
    def _refuse_if_allocated(session: sa.orm.Session, pool_filter: Any, what: str) -> None:
        held = session.scalar(
            sa.select(sa.func.count()).select_from(AddressAllocation)
            .join(AddressPool, AddressPool.id == AddressAllocation.pool_id).where(pool_filter))
        if held:
            raise Conflict(reason=f"{what} still holds {held} allocated addresses; release them first")

    # --- tenants and segments ---------------------------------------------------------

    def add_tenant(self, project_id: str, datacenter: str = DEFAULT_DATACENTER,
                   number: int | None = None) -> dict[str, Any]:
        """Number a tenant (lowest free, or ``number``). Idempotent by project id.

        The N+1-th tenant when the tenant bits allow N raises NumberExhausted.
        """
        dc, layout = self.datacenter(datacenter)
        row = self._assign(
            kind="tenant", scope=f"datacenter {datacenter}", layout=layout, model=Tenant,
            scope_filter=Tenant.datacenter_id == dc.id, number=number,
            existing=lambda s: s.scalars(_tenant_by_project(dc.id, project_id)).first(),
            build=lambda n: Tenant(datacenter_id=dc.id, project_id=project_id, number=n))
        return _tenant_dict(row)

    def tenant(self, project_id: str, datacenter: str = DEFAULT_DATACENTER) -> Tenant:
        dc, _ = self.datacenter(datacenter)
        with self.db.begin() as session:
            row = session.scalars(_tenant_by_project(dc.id, project_id)).first()
        if row is None:
            raise NotFound(kind="tenant", ident=f"{project_id} (datacenter {datacenter})")
        return row

    def list_tenants(self, datacenter: str = DEFAULT_DATACENTER) -> list[dict[str, Any]]:
        dc, _ = self.datacenter(datacenter)
        with self.db.begin() as session:
            rows = session.scalars(sa.select(Tenant).where(Tenant.datacenter_id == dc.id)
                                   .order_by(Tenant.number)).all()
        return [_tenant_dict(row) for row in rows]

    def remove_tenant(self, project_id: str, datacenter: str = DEFAULT_DATACENTER) -> bool:
        """Remove a tenant with no segments left; False if it was not there."""
        dc, _ = self.datacenter(datacenter)
        with self.db.begin() as session:
            row = session.scalars(_tenant_by_project(dc.id, project_id)).first()
            if row is None:
                return False
            segments = session.scalar(sa.select(sa.func.count()).select_from(Segment)
                                      .where(Segment.tenant_id == row.id))
            if segments:
                raise Conflict(reason=f"tenant {project_id} still has {segments} segments; remove them first")
            session.delete(row)
        return True

    def add_segment(self, project_id: str, name: str, datacenter: str = DEFAULT_DATACENTER,
                    number: int | None = None) -> dict[str, Any]:
        """Number a segment of a tenant (numbering the tenant first if needed).

        Idempotent by (tenant, name). Raises NumberOutOfRange or NumberExhausted.
        """
        dc, layout = self.datacenter(datacenter)
        if number is not None:
            layout.check("segment", number)
        tenant_info = self.add_tenant(project_id, datacenter)
        tenant_id = tenant_info["id"]
        row = self._assign(
            kind="segment", scope=f"tenant {project_id}", layout=layout, model=Segment,
            scope_filter=Segment.tenant_id == tenant_id, number=number,
            existing=lambda s: s.scalars(sa.select(Segment).where(
                Segment.tenant_id == tenant_id, Segment.name == name)).first(),
            build=lambda n: Segment(tenant_id=tenant_id, name=name, number=n))
        return {"id": row.id, "name": row.name, "number": row.number,
                "project_id": project_id, "tenant_number": tenant_info["number"]}

    def segment(self, segment_id: int) -> tuple[Segment, Tenant, Datacenter, Layout]:
        """A segment with its tenant, datacenter and layout; NotFound if unknown."""
        with self.db.begin() as session:
            found = session.execute(
                sa.select(Segment, Tenant, Datacenter)
                .join(Tenant, Tenant.id == Segment.tenant_id)
                .join(Datacenter, Datacenter.id == Tenant.datacenter_id)
                .where(Segment.id == segment_id)).first()
        if found is None:
            raise NotFound(kind="segment", ident=segment_id)
        segment, tenant, dc = found
        return segment, tenant, dc, layout_of(dc)

    def list_segments(self, project_id: str | None = None,
                      datacenter: str = DEFAULT_DATACENTER) -> list[dict[str, Any]]:
        dc, _ = self.datacenter(datacenter)
        query = (sa.select(Segment, Tenant).join(Tenant, Tenant.id == Segment.tenant_id)
                 .where(Tenant.datacenter_id == dc.id).order_by(Tenant.number, Segment.number))
        if project_id is not None:
            query = query.where(Tenant.project_id == project_id)
        with self.db.begin() as session:
            return [_segment_dict(segment, tenant) for segment, tenant in session.execute(query).all()]

    def remove_segment(self, project_id: str, name: str, datacenter: str = DEFAULT_DATACENTER) -> bool:
        """Remove a segment that holds no addresses; False if it was not there."""
        tenant = self.tenant(project_id, datacenter)
        with self.db.begin() as session:
            row = session.scalars(sa.select(Segment).where(Segment.tenant_id == tenant.id,
                                                           Segment.name == name)).first()
            if row is None:
                return False
            self._refuse_if_allocated(session, AddressPool.segment_id == row.id, f"segment {name}")
            session.delete(row)
        return True
