"""The floating IPs and security groups pages and the launch form's groups, in-process
in front of a real API served over HTTP (see conftest)."""

from __future__ import annotations

import pytest

from fabric.dashboard.client import ApiError
from fabric.dashboard.pages_security import rule_body, rule_text
from fabric.dashboard.pages_servers import launch_body
from tests.unit.dashboard.conftest import csrf_of, login

NET = "/networking/v2.0"


def test_rule_body_makes_a_single_port_rule_and_names_a_bad_port():
    values = {"direction": "", "protocol": "tcp", "port_min": "22", "port_max": "", "remote": "10.0.0.0/8"}
    assert rule_body("g1", values) == {"security_group_rule": {
        "security_group_id": "g1", "direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
        "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "10.0.0.0/8"}}
    assert rule_body("g1", dict(values, remote="2001:db8::/32"))["security_group_rule"]["ethertype"] == "IPv6"
    any_rule = rule_body("g1", dict(values, protocol="", port_min="", remote=""))["security_group_rule"]
    assert (any_rule["protocol"], any_rule["remote_ip_prefix"], "port_range_min" in any_rule) == (None, None, False)
    with pytest.raises(ApiError, match="'ssh' is not a number"):
        rule_body("g1", dict(values, port_min="ssh"))


def test_rule_text_reads_as_a_sentence():
    assert rule_text({"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 80,
                      "port_range_max": 90, "remote_ip_prefix": "0.0.0.0/0"}) == "IPv4 tcp 80-90 from 0.0.0.0/0"
    assert rule_text({"direction": "egress", "ethertype": "IPv6", "protocol": None, "port_range_min": None,
                      "port_range_max": None, "remote_ip_prefix": None}) == "IPv6 any protocol to anywhere"


def test_launch_body_sends_group_ids_and_the_server_group_hint():
    body = launch_body({"name": "vm", "flavor": "f", "image": "i", "count": "1", "network": "", "key_name": "",
                        "user_data": "", "security_groups": ["id-a", "id-b"], "server_group": "sg-1"})
    assert body["server"]["security_groups"] == [{"name": "id-a"}, {"name": "id-b"}]
    assert body["os:scheduler_hints"] == {"group": "sg-1"}


def test_launch_form_offers_the_projects_server_groups_and_security_groups(dashboard, live_api):
    headers = live_api.admin.headers
    group = live_api.app.post_json("/compute/v2.1/os-server-groups", {"server_group": {
        "name": "<b>near</b>", "policies": ["affinity"]}}, headers=headers).json["server_group"]
    secgroup = live_api.app.post_json(f"{NET}/security-groups", {"security_group": {"name": "web"}},
                                      headers=headers).json["security_group"]
    login(dashboard)
    page = dashboard.get("/dashboard/servers/launch")
    offered = {o["value"]: o.text for o in page.html.find(id="server_group").find_all("option")}
    assert offered[group["id"]] == "<b>near</b> (affinity)"  # shown as text (escaped in the HTML)
    assert "&lt;b&gt;near&lt;/b&gt;" in page.text
    groups = {o.text: o["value"] for o in page.html.find(id="security_groups").find_all("option")}
    assert groups["web"] == secgroup["id"] and "default" in groups


def test_floating_ip_refusals_are_shown_on_the_page(dashboard, live_api):
    internal = live_api.app.post_json(f"{NET}/networks", {"network": {"name": "lan"}},
                                      headers=live_api.admin.headers).json["network"]
    login(dashboard)
    page = dashboard.get("/dashboard/floating-ips")
    assert "No external network to allocate from" in page.text
    refused = dashboard.post("/dashboard/floating-ips", {"csrf_token": csrf_of(dashboard), "network": internal["id"]},
                             status=400)
    assert "is not an external network" in refused.html.find(role="alert").text
    assert refused.html.find("h1").text == "Floating IPs"  # on the page itself, not an error page
    assert live_api.app.get(f"{NET}/floatingips", headers=live_api.admin.headers).json["floatingips"] == []


def test_security_group_refusals_are_shown_and_nothing_is_added(dashboard, live_api):
    login(dashboard)
    token = csrf_of(dashboard)
    taken = dashboard.post("/dashboard/security-groups", {"csrf_token": token, "name": "default"}, status=409)
    assert "'default' is taken" in taken.html.find(role="alert").text
    assert taken.html.find(id="sg-name")["value"] == "default"  # the form keeps what was typed
    page = dashboard.get("/dashboard/security-groups")
    [default] = page.html.select('section.secgroup[data-group="default"]')
    action = default.find("form", action=lambda a: a and a.endswith("/rules"))["action"]
    bad = dashboard.post(action, {"csrf_token": token, "direction": "ingress", "protocol": "tcp",
                                  "port_min": "70000", "port_max": "", "remote": ""}, status=400)
    assert "70000" in bad.html.find(role="alert").text
    rules = live_api.app.get(f"{NET}/security-group-rules?protocol=tcp", headers=live_api.admin.headers).json
    assert rules["security_group_rules"] == []
