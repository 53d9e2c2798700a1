"""Floating IPs (allocate from an external network, associate with a server's
port, disassociate, release) and security groups (list, create, delete, add
and remove rules), each where the Network API offers them.

Every change is one call to the public Network API; a refusal the user can fix
(4xx) is shown on the page above the form that caused it, anything else goes
to the dashboard's error page.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import falcon

from fabric.dashboard.client import ApiClient, ApiError
from fabric.dashboard.pages_servers import features
from fabric.dashboard.web import field, flash, redirect, render, session

#: Port device owners of servers (the ports a floating IP may be associated with).
COMPUTE_OWNER_PREFIX = "compute:"

#: Protocols the add-rule form offers ("" is any protocol).
PROTOCOLS = ("tcp", "udp", "icmp", "")


def _path(kind: str, ident: str) -> str:
    return f"/{kind}/{quote(ident, safe='')}"


def _refusal(err: ApiError) -> str:
    """The message of a refusal the user can fix; re-raises a failure of the cloud."""
    if not 400 <= err.status < 500:
        raise err
    return err.message


def server_ports(api: ApiClient) -> list[dict[str, Any]]:
    """The project's server ports with an IPv4 address, labelled by server name and address."""
    servers = {s["id"]: s["name"] for s in api.get("compute", "/servers")["servers"]}
    out = []
    for port in api.get("network", "/ports")["ports"]:
        if not (port.get("device_owner") or "").startswith(COMPUTE_OWNER_PREFIX):
            continue
        v4 = [ip["ip_address"] for ip in port.get("fixed_ips", []) if ":" not in ip["ip_address"]]
        if v4:
            name = servers.get(port.get("device_id"), port.get("device_id") or port["id"])
            out.append({"id": port["id"], "server": name, "address": v4[0], "label": f"{name} ({v4[0]})"})
    return sorted(out, key=lambda p: (p["server"], p["address"]))


def floating_view(req: falcon.Request, error: str | None = None) -> dict[str, Any]:
    offered = features(session(req))["floating_ips"]
    view: dict[str, Any] = {"offered": offered, "floating_ips": [], "external": [], "ports": [], "error": error}
    if offered:
        api = session(req).client()
        ports = server_ports(api)
        by_port = {p["id"]: p for p in ports}
        ips = api.get("network", "/floatingips")["floatingips"]
        for ip in ips:
            ip["attached"] = by_port[ip["port_id"]]["server"] if ip.get("port_id") in by_port else ip.get("port_id")
        view.update(floating_ips=sorted(ips, key=lambda i: i["floating_ip_address"]), ports=ports,
                    external=[n for n in api.get("network", "/networks")["networks"] if n.get("router:external")])
    return view


def _floating_change(req: falcon.Request, resp: falcon.Response, change, done: str) -> None:
    """Run ``change(api)``; flash ``done`` and go back to the list, or show the refusal there."""
    current = session(req)
    if not features(current)["floating_ips"]:
        raise ApiError(404, "this cloud does not offer floating IPs")
    try:
        change(current.client())
    except ApiError as err:
        render(req, resp, "floating_ips.html", status=err.status, **floating_view(req, _refusal(err)))
        return
    flash(req, done)
    redirect("/dashboard/floating-ips")


class FloatingIps:
    """The project's floating IPs, and allocation from an external network."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        render(req, resp, "floating_ips.html", **floating_view(req))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        network = field(req, "network")

        def allocate(api: ApiClient) -> None:
            if not network:
                raise ApiError(400, "Choose an external network to allocate from.")
            api.call("POST", "network", "/floatingips", body={"floatingip": {"floating_network_id": network}})

        _floating_change(req, resp, allocate, "Allocated a floating IP.")


class FloatingIpItem:
    def on_post_associate(self, req: falcon.Request, resp: falcon.Response, ip_id: str) -> None:
        port = field(req, "port")

        def associate(api: ApiClient) -> None:
            if not port:
                raise ApiError(400, "Choose the server port to associate the floating IP with.")
            api.call("PUT", "network", _path("floatingips", ip_id), body={"floatingip": {"port_id": port}})

        _floating_change(req, resp, associate, "Associated the floating IP.")

    def on_post_disassociate(self, req: falcon.Request, resp: falcon.Response, ip_id: str) -> None:
        _floating_change(req, resp, lambda api: api.call("PUT", "network", _path("floatingips", ip_id),
                                                         body={"floatingip": {"port_id": None}}),
                         "Disassociated the floating IP.")

    def on_post_release(self, req: falcon.Request, resp: falcon.Response, ip_id: str) -> None:
        _floating_change(req, resp, lambda api: api.call("DELETE", "network", _path("floatingips", ip_id)),
                         "Released the floating IP.")


def rule_text(rule: dict[str, Any]) -> str:
    """A rule as one readable line, e.g. ``tcp 22 from 0.0.0.0/0``."""
    protocol = rule.get("protocol") or "any protocol"
    low, high = rule.get("port_range_min"), rule.get("port_range_max")
    ports = "" if low is None else f" {low}" if high in (None, low) else f" {low}-{high}"
    source = rule.get("remote_ip_prefix") or (f"group {rule['remote_group_id']}" if rule.get("remote_group_id")
                                              else "anywhere")
    return f"{rule.get('ethertype', 'IPv4')} {protocol}{ports} {'from' if rule['direction'] == 'ingress' else 'to'} " \
           f"{source}"


def groups_view(req: falcon.Request, error: str | None = None, values: dict | None = None) -> dict[str, Any]:
    offered = features(session(req))["security_groups"]
    groups = []
    if offered:
        groups = session(req).client().get("network", "/security-groups")["security_groups"]
        for group in groups:
            group["rule_rows"] = [dict(r, text=rule_text(r)) for r in group.get("security_group_rules", [])]
    return {"offered": offered, "groups": sorted(groups, key=lambda g: (g["name"] != "default", g["name"], g["id"])),
            "error": error, "values": values or {}, "protocols": PROTOCOLS}


def _group_change(req: falcon.Request, resp: falcon.Response, change, done: str, values: dict | None = None) -> None:
    current = session(req)
    if not features(current)["security_groups"]:
        raise ApiError(404, "this cloud does not offer security groups")
    try:
        change(current.client())
    except ApiError as err:
        render(req, resp, "security_groups.html", status=err.status, **groups_view(req, _refusal(err), values))
        return
    flash(req, done)
    redirect("/dashboard/security-groups")


def rule_body(group_id: str, values: dict[str, str]) -> dict[str, Any]:
    """The create-rule request for the add-rule form's values; ApiError(400) naming a bad one."""
    rule: dict[str, Any] = {"security_group_id": group_id, "direction": values["direction"] or "ingress",
                            "ethertype": "IPv6" if ":" in values["remote"] else "IPv4",
                            "protocol": values["protocol"] or None, "remote_ip_prefix": values["remote"] or None}
    for key, name in (("port_min", "port_range_min"), ("port_max", "port_range_max")):
        text = values[key]
        if text:
            try:
                rule[name] = int(text)
            except ValueError:
                raise ApiError(400, f"Port {text!r} is not a number; use 1 to 65535.") from None
    if "port_range_min" in rule and "port_range_max" not in rule:
        rule["port_range_max"] = rule["port_range_min"]
    return {"security_group_rule": rule}


class SecurityGroups:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        render(req, resp, "security_groups.html", **groups_view(req))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        values = {"name": field(req, "name"), "description": field(req, "description")}

        def create(api: ApiClient) -> None:
            if not values["name"]:
                raise ApiError(400, "Give the security group a name.")
            api.call("POST", "network", "/security-groups", body={"security_group": values})

        _group_change(req, resp, create, f"Created security group {values['name']}.", values)


class SecurityGroupItem:
    def on_post_delete(self, req: falcon.Request, resp: falcon.Response, group_id: str) -> None:
        _group_change(req, resp, lambda api: api.call("DELETE", "network", _path("security-groups", group_id)),
                      "Deleted the security group.")

    def on_post_rules(self, req: falcon.Request, resp: falcon.Response, group_id: str) -> None:
        values = {k: field(req, k) for k in ("direction", "protocol", "port_min", "port_max", "remote")}
        _group_change(req, resp, lambda api: api.call("POST", "network", "/security-group-rules",
                                                      body=rule_body(group_id, values)),
                      "Added the rule.", {"rule_group": group_id, **values})


class SecurityGroupRuleDelete:
    def on_post(self, req: falcon.Request, resp: falcon.Response, rule_id: str) -> None:
        _group_change(req, resp, lambda api: api.call("DELETE", "network", _path("security-group-rules", rule_id)),
                      "Removed the rule.")


def register(app: falcon.App, prefix: str) -> None:
    floating = FloatingIpItem()
    app.add_route(f"{prefix}/floating-ips", FloatingIps())
    for action in ("associate", "disassociate", "release"):
        app.add_route(f"{prefix}/floating-ips/{{ip_id}}/{action}", floating, suffix=action)
    group = SecurityGroupItem()
    app.add_route(f"{prefix}/security-groups", SecurityGroups())
    app.add_route(f"{prefix}/security-groups/{{group_id}}/delete", group, suffix="delete")
    app.add_route(f"{prefix}/security-groups/{{group_id}}/rules", group, suffix="rules")
    app.add_route(f"{prefix}/security-group-rules/{{rule_id}}/delete", SecurityGroupRuleDelete())
