"""The topology picture: where each box of the SVG goes.

From what the admin API says (datacenter layouts with their hosts, tenants
with their segments, hypervisors) and the servers listing, :func:`layout`
computes a list of boxes and texts with coordinates; the template only draws
them. Per datacenter: the address bar (prefix | host | tenant | segment |
endpoint bits, to scale), one column per host with its block, the tenant and
segment blocks Romana gives every tenant on that host, and the networks with
servers on that host. Hosts that run servers but are not in any layout (L2
networks) get columns of their own.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fabric.exception import FabricError
from fabric.ipam.layout import Layout

WIDTH = 960
COLUMN = 230
GAP = 12
LINE = 16
BAR = 26
#: Most servers listed per network in one host column (the rest become "+N more").
MAX_SERVERS = 6

#: Fill of each address field in the bar and of each kind of box (the CSS names them too).
KINDS = ("prefix", "host", "tenant", "segment", "endpoint", "network", "server")


@dataclasses.dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int
    kind: str
    label: str = ""
    title: str = ""


@dataclasses.dataclass(frozen=True)
class Text:
    x: int
    y: int
    text: str
    kind: str = ""


@dataclasses.dataclass
class Picture:
    width: int
    height: int
    boxes: list[Box]
    texts: list[Text]


def _host_servers(servers: list[dict]) -> dict[str, dict[str, list[str]]]:
    """host -> network name -> ["server (address)", ...]."""
    hosts: dict[str, dict[str, list[str]]] = {}
    for server in servers:
        host = server.get("OS-EXT-SRV-ATTR:host")
        if not host:
            continue
        networks = hosts.setdefault(host, {})
        addresses = server.get("addresses") or {}
        if not addresses:
            networks.setdefault("(no network)", []).append(server["name"])
        for network, entries in addresses.items():
            shown = ", ".join(a["addr"] for a in entries)
            networks.setdefault(network, []).append(f"{server['name']} ({shown})" if shown else server["name"])
    return hosts


def _column(x: int, y: int, name: str, subtitle: str, tenants: list[tuple[str, str, list[tuple[str, str]]]],
            networks: dict[str, list[str]], boxes: list[Box], texts: list[Text]) -> int:
    """Draw one host column at (x, y); returns its bottom."""
    inner = x + 8
    cursor = y + 2 * LINE + 8
    for label, block, segments in tenants:
        top = cursor
        texts.append(Text(inner + 6, cursor + LINE, f"{label}  {block}", "tenant"))
        cursor += LINE + 6
        for seg_label, seg_block in segments:
            boxes.append(Box(inner + 12, cursor, COLUMN - 40, LINE + 4, "segment", title=f"{seg_label} {seg_block}"))
            texts.append(Text(inner + 18, cursor + LINE - 1, f"{seg_label}  {seg_block}", "segment"))
            cursor += LINE + 8
        boxes.insert(0, Box(inner, top, COLUMN - 16, cursor - top + 4, "tenant", title=f"{label} {block}"))
        cursor += 10
    for network, members in sorted(networks.items()):
        top = cursor
        texts.append(Text(inner + 6, cursor + LINE, network, "network"))
        cursor += LINE + 4
        for member in members[:MAX_SERVERS]:
            texts.append(Text(inner + 14, cursor + LINE - 2, member, "server"))
            cursor += LINE
        if len(members) > MAX_SERVERS:
            texts.append(Text(inner + 14, cursor + LINE - 2, f"+{len(members) - MAX_SERVERS} more", "server"))
            cursor += LINE
        boxes.insert(0, Box(inner, top, COLUMN - 16, cursor - top + 6, "network", title=network))
        cursor += 12
    bottom = max(cursor, y + 3 * LINE)
    boxes.insert(0, Box(x, y, COLUMN, bottom - y, "host", title=name))
    texts.append(Text(x + 8, y + LINE, name, "host"))
    texts.append(Text(x + 8, y + 2 * LINE, subtitle, "block"))
    return bottom


def layout(topology: dict, tenants: list[dict], servers: list[dict], hypervisors: list[dict],
           project_names: dict[str, str] | None = None) -> Picture:
    """The picture of the whole cloud (see the module docstring)."""
    project_names = project_names or {}
    boxes: list[Box] = []
    texts: list[Text] = []
    by_host = _host_servers(servers)
    placed: set[str] = set()
    columns = max(1, (WIDTH - GAP) // (COLUMN + GAP))
    y = GAP
    for dc in topology.get("datacenters", []):
        try:
            romana = Layout.build(dc["prefix"], dc["host_bits"], dc["tenant_bits"], dc["segment_bits"],
                                  dc["endpoint_bits"])
        except (FabricError, KeyError, TypeError):
            romana = None
        texts.append(Text(GAP, y + LINE, f"Datacenter {dc.get('name', '?')}  {dc.get('prefix', '')}", "title"))
        y += LINE + 8
        if romana is not None:
            fields = [("prefix", romana.prefix.prefixlen)] + [(f, romana.bits(f)) for f in
                                                               ("host", "tenant", "segment", "endpoint")]
            total = romana.prefix.max_prefixlen
            x = GAP
            for name, bits in fields:
                w = max(1, round((WIDTH - 2 * GAP) * bits / total))
                boxes.append(Box(x, y, w, BAR, name, title=f"{name}: {bits} bits"))
                if w > 60:
                    texts.append(Text(x + 4, y + BAR - 8, f"{name} {bits}", "bar"))
                x += w
            y += BAR + GAP
        dc_tenants = [t for t in tenants if t.get("datacenter_id") == dc.get("id")]
        bottoms = [y]
        for index, host in enumerate(dc.get("hosts", [])):
            row, col = divmod(index, columns)
            if col == 0 and index:
                y = max(bottoms) + GAP
                bottoms = [y]
            x = GAP + col * (COLUMN + GAP)
            block = str(romana.host_block(host["number"])) if romana else ""
            host_tenants = []
            for tenant in dc_tenants:
                if romana is None:
                    break
                label = f"tenant {tenant['number']} {project_names.get(tenant.get('project_id'), '')}".strip()
                segments = [(f"segment {s['number']} {s['name']}",
                             str(romana.segment_block(host["number"], tenant["number"], s["number"])))
                            for s in tenant.get("segments", [])]
                host_tenants.append((label, str(romana.tenant_block(host["number"], tenant["number"])), segments))
            bottoms.append(_column(x, y, f"{host['name']}  #{host['number']}", block, host_tenants,
                                   by_host.get(host["name"], {}), boxes, texts))
            placed.add(host["name"])
        y = max(bottoms) + 2 * GAP
    others = sorted({h.get("hypervisor_hostname") for h in hypervisors if h.get("hypervisor_hostname")}
                    | set(by_host))
    others = [name for name in others if name not in placed]
    if others:
        texts.append(Text(GAP, y + LINE, "Hosts outside any address layout", "title"))
        y += LINE + 8
        bottoms = [y]
        for index, name in enumerate(others):
            row, col = divmod(index, columns)
            if col == 0 and index:
                y = max(bottoms) + GAP
                bottoms = [y]
            bottoms.append(_column(GAP + col * (COLUMN + GAP), y, name, "", [], by_host.get(name, {}), boxes, texts))
        y = max(bottoms) + GAP
    return Picture(width=WIDTH, height=y + GAP, boxes=boxes, texts=texts)


def as_dicts(picture: Picture) -> dict[str, Any]:
    return {"width": picture.width, "height": picture.height,
            "boxes": [dataclasses.asdict(b) for b in picture.boxes],
            "texts": [dataclasses.asdict(t) for t in picture.texts]}
