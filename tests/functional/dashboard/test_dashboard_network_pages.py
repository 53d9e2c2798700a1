"""The dashboard's launch form with server groups and security groups, its
floating IPs page and its security groups page, in a real headless Chromium
against a running fabric-all; every outcome is checked through the public API."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.functional.dashboard.conftest import log_in

pytestmark = [pytest.mark.functional, pytest.mark.slow]

NET = "/networking/v2.0"


def server_row(page, name: str):
    return page.locator("#servers tbody tr", has=page.get_by_role("link", name=name, exact=True))


def group_section(page, name: str):
    return page.locator(f'section.secgroup[data-group="{name}"]')


def launch(page, cloud, name: str, *, server_group: str | None = None, security_groups: list[str] = ()) -> None:
    page.goto(cloud.dashboard_url + "/servers/launch")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Flavor").select_option(cloud.flavor_id)
    page.get_by_label("Image").select_option(cloud.image_id)
    page.get_by_label("Network").select_option(cloud.network_id)
    if server_group:
        page.get_by_label("Server group").select_option(label=server_group)
    if security_groups:
        page.get_by_label("Security groups").select_option(label=list(security_groups))
    page.get_by_role("button", name="Launch").click()
    page.wait_for_url("**/dashboard/servers")
    expect(server_row(page, name).locator('[data-field="status"]')).to_have_text("ACTIVE", timeout=60_000)


def server_id(api, name: str) -> str:
    _, doc = api("GET", f"/compute/v2.1/servers?name={name}")
    (server,) = [s for s in doc["servers"] if s["name"] == name]
    return server["id"]


def test_security_groups_page_creates_a_group_and_adds_and_removes_a_rule(cloud, page, shot):
    page.on("dialog", lambda dialog: dialog.accept())
    api = cloud.admin_api()
    log_in(page, cloud, path="/security-groups")
    expect(group_section(page, "default")).to_be_visible()
    page.get_by_label("Name", exact=True).fill("web")
    page.get_by_role("button", name="Create group").click()
    page.wait_for_url("**/dashboard/security-groups")
    web = group_section(page, "web")
    expect(web).to_be_visible()

    web.get_by_label("Protocol").select_option("tcp")
    web.get_by_label("Port (or first port)").fill("8080")
    web.get_by_label("From CIDR").fill("192.0.2.0/24")
    web.get_by_role("button", name="Add ingress rule").click()
    page.wait_for_url("**/dashboard/security-groups")
    expect(group_section(page, "web").locator("tbody tr", has_text="tcp 8080 from 192.0.2.0/24")).to_have_count(1)
    shot(page, "security-groups")
    _, doc = api("GET", f"{NET}/security-groups?name=web")
    (group,) = doc["security_groups"]
    added = [r for r in group["security_group_rules"] if r["direction"] == "ingress" and r["protocol"] == "tcp"]
    assert [(r["port_range_min"], r["port_range_max"], r["remote_ip_prefix"]) for r in added] == \
        [(8080, 8080, "192.0.2.0/24")]

    # A refusal of the API is shown on the page, readable, and nothing is added.
    web = group_section(page, "web")
    web.get_by_label("Protocol").select_option("tcp")
    web.get_by_label("Port (or first port)").fill("70000")
    web.get_by_role("button", name="Add ingress rule").click()
    expect(page.get_by_role("alert")).to_contain_text("70000")
    _, doc = api("GET", f"{NET}/security-group-rules?security_group_id={group['id']}&protocol=tcp")
    assert len(doc["security_group_rules"]) == 1

    page.goto(cloud.dashboard_url + "/security-groups")
    group_section(page, "web").locator("tbody tr", has_text="tcp 8080").get_by_role(
        "button", name="Remove rule").click()
    page.wait_for_url("**/dashboard/security-groups")
    expect(group_section(page, "web").locator("tbody tr", has_text="tcp 8080")).to_have_count(0)
    _, doc = api("GET", f"{NET}/security-group-rules?security_group_id={group['id']}&protocol=tcp")
    assert doc["security_group_rules"] == []


def test_launch_into_a_server_group_with_security_groups(cloud, page):
    api = cloud.admin_api()
    _, doc = api("POST", "/compute/v2.1/os-server-groups", {"server_group": {"name": "spread",
                                                                             "policies": ["anti-affinity"]}})
    group_id = doc["server_group"]["id"]
    _, doc = api("POST", f"{NET}/security-groups", {"security_group": {"name": "db"}})
    db_id = doc["security_group"]["id"]
    _, doc = api("GET", f"{NET}/security-groups?name=default")
    default_id = doc["security_groups"][0]["id"]

    log_in(page, cloud, path="/servers/launch")
    launch(page, cloud, "grouped-1", server_group="spread (anti-affinity)", security_groups=["default", "db"])
    ident = server_id(api, "grouped-1")
    _, doc = api("GET", f"/compute/v2.1/os-server-groups/{group_id}")
    assert doc["server_group"]["members"] == [ident]
    _, doc = api("GET", f"{NET}/ports?device_id={ident}")
    (port,) = doc["ports"]
    assert sorted(port["security_groups"]) == sorted([default_id, db_id])
    api("DELETE", f"/compute/v2.1/servers/{ident}")


def test_floating_ip_allocate_associate_disassociate_release(cloud, page, shot):
    page.on("dialog", lambda dialog: dialog.accept())
    api = cloud.admin_api()
    _, doc = api("POST", f"{NET}/networks", {"network": {"name": "public", "router:external": True}})
    external = doc["network"]["id"]
    api("POST", f"{NET}/subnets", {"subnet": {"network_id": external, "ip_version": 4,
                                              "cidr": "203.0.113.0/24"}})
    log_in(page, cloud, path="/servers/launch")
    launch(page, cloud, "floaty")
    ident = server_id(api, "floaty")
    _, doc = api("GET", f"{NET}/ports?device_id={ident}")
    (port,) = doc["ports"]
    fixed = port["fixed_ips"][0]["ip_address"]

    page.goto(cloud.dashboard_url + "/floating-ips")
    page.get_by_label("External network").select_option(label="public")
    page.get_by_role("button", name="Allocate").click()
    page.wait_for_url("**/dashboard/floating-ips")
    _, doc = api("GET", f"{NET}/floatingips?floating_network_id={external}")
    (fip,) = doc["floatingips"]
    address = fip["floating_ip_address"]
    assert address.startswith("203.0.113.") and fip["port_id"] is None
    row = page.locator(f'tr[data-floating-ip="{address}"]')
    expect(row.locator('[data-field="status"]')).to_have_text("DOWN")

    row.get_by_label(f"Associate {address} with").select_option(label=f"floaty ({fixed})")
    row.get_by_role("button", name="Associate").click()
    page.wait_for_url("**/dashboard/floating-ips")
    row = page.locator(f'tr[data-floating-ip="{address}"]')
    expect(row.locator('[data-field="server"]')).to_have_text("floaty")
    expect(row.locator('[data-field="fixed"]')).to_have_text(fixed)
    shot(page, "floating-ips")
    _, doc = api("GET", f"{NET}/floatingips/{fip['id']}")
    assert (doc["floatingip"]["port_id"], doc["floatingip"]["fixed_ip_address"]) == (port["id"], fixed)

    row.get_by_role("button", name="Disassociate").click()
    page.wait_for_url("**/dashboard/floating-ips")
    expect(page.locator(f'tr[data-floating-ip="{address}"] [data-field="status"]')).to_have_text("DOWN")
    _, doc = api("GET", f"{NET}/floatingips/{fip['id']}")
    assert doc["floatingip"]["port_id"] is None

    page.locator(f'tr[data-floating-ip="{address}"]').get_by_role("button", name="Release").click()
    page.wait_for_url("**/dashboard/floating-ips")
    expect(page.locator(f'tr[data-floating-ip="{address}"]')).to_have_count(0)
    api("GET", f"{NET}/floatingips/{fip['id']}", ok=(404,))
    api("DELETE", f"/compute/v2.1/servers/{ident}")
