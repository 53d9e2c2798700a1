"""The dashboard in a real headless Chromium against a running fabric-all: every
item of issue 18's "Show" list, with a screenshot of each main page."""

from __future__ import annotations

import re
import sys

import kombu
import pytest
from playwright.sync_api import expect

from tests.fixtures.processes import free_port
from tests.functional.dashboard.conftest import Api, log_in

pytestmark = [pytest.mark.functional, pytest.mark.slow]

SCRIPT_NAME = "<script>alert(1)</script>"


def server_row(page, name: str):
    return page.locator("#servers tbody tr", has=page.get_by_role("link", name=name, exact=True))


def test_log_in_and_every_main_page(cloud, page, shot):
    page.goto(cloud.dashboard_url + "/servers")
    # Not logged in: the login form, remembering where we were going.
    expect(page).to_have_url(re.compile(r"/dashboard/login\?next=/dashboard/servers"))
    shot(page, "login")
    page.get_by_label("User").fill("admin")
    page.get_by_label("Password").fill("wrong password")
    page.get_by_label("Project").fill("admin")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("password is wrong")
    page.get_by_label("Password").fill(cloud.password)
    page.keyboard.press("Enter")  # the form works from the keyboard
    page.wait_for_url("**/dashboard/servers")
    for path, name, heading in [("/overview", "overview", "Project admin"), ("/servers", "servers", "Servers"),
                                ("/servers/launch", "launch", "Launch a server"), ("/images", "images", "Images"),
                                ("/networks", "networks", "Networks"), ("/floating-ips", "floating-ips", "Floating IPs"),
                                ("/security-groups", "security-groups", "Security groups"),
                                ("/keypairs", "keypairs", "Key pairs"),
                                ("/admin/hypervisors", "hypervisors", "Hypervisors"),
                                ("/admin/services", "services", "Services"), ("/admin/queues", "queues", "Queues"),
                                ("/admin/topology", "topology", "Topology")]:
        page.goto(cloud.dashboard_url + path)
        expect(page.get_by_role("heading", level=1)).to_contain_text(heading)
        shot(page, name)
    # What the cloud lacks is said: floating IPs come from external networks, and it has none yet.
    page.goto(cloud.dashboard_url + "/floating-ips")
    expect(page.locator("main")).to_contain_text("No external network to allocate from")
    page.goto(cloud.dashboard_url + "/admin/hypervisors")
    expect(page.locator("main table")).to_contain_text("dashhost")
    page.goto(cloud.dashboard_url + "/admin/topology")
    expect(page.locator("svg#topology")).to_contain_text("dashhost")


def test_launch_watch_active_console_reboot_and_delete(cloud, page, shot):
    log_in(page, cloud, path="/servers/launch")
    page.get_by_label("Name").fill("web-1")
    page.get_by_label("Flavor").select_option(cloud.flavor_id)
    page.get_by_label("Image").select_option(cloud.image_id)
    page.get_by_label("Network").select_option(cloud.network_id)
    page.get_by_label("User data").fill("#cloud-config\n")
    page.get_by_role("button", name="Launch").click()
    page.wait_for_url("**/dashboard/servers")
    row = server_row(page, "web-1")
    expect(row.locator('[data-field="status"]')).to_contain_text("BUILD")
    # A marker that a reload would wipe: the status must turn ACTIVE on this same page.
    page.evaluate("window.__stillTheSamePage = true")
    expect(row.locator('[data-field="status"]')).to_have_text("ACTIVE", timeout=60_000)
    expect(row.locator('[data-field="addresses"]')).to_contain_text("lan: 10.40.0.")
    assert page.evaluate("window.__stillTheSamePage === true")
    shot(page, "servers-active")

    row.get_by_role("link", name="web-1").click()
    expect(page.locator('[data-field="console"]')).to_contain_text("booted")
    shot(page, "server-detail")
    page.get_by_role("button", name="Reboot", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Reboot server web-1?")
    page.get_by_role("button", name="Yes, reboot").click()
    page.evaluate("window.__stillTheSamePage = true")
    # The console tail is refreshed in place: the fake guest logs the reboot.
    expect(page.locator('[data-field="console"]')).to_contain_text("reboot", timeout=60_000)
    expect(page.locator('[data-field="status"]')).to_have_text("ACTIVE", timeout=60_000)
    assert page.evaluate("window.__stillTheSamePage === true")

    page.get_by_role("button", name="Delete").click()
    page.get_by_role("button", name="Yes, delete").click()
    page.wait_for_url("**/dashboard/servers")
    expect(server_row(page, "web-1")).to_have_count(0, timeout=60_000)


#: Records every value the page gives a progress bar (kept across the reload after the upload).
RECORD_PROGRESS = """
const own = Object.getOwnPropertyDescriptor(HTMLProgressElement.prototype, 'value');
Object.defineProperty(HTMLProgressElement.prototype, 'value', {
  get() { return own.get.call(this); },
  set(v) {
    const seen = JSON.parse(sessionStorage.getItem('seenProgress') || '[]');
    seen.push(v);
    sessionStorage.setItem('seenProgress', JSON.stringify(seen));
    own.set.call(this, v);
  }});
"""


def test_image_upload_shows_progress(cloud, page, tmp_path):
    page.add_init_script(RECORD_PROGRESS)
    log_in(page, cloud, path="/images")
    data = tmp_path / "disk.raw"
    data.write_bytes(b"\x5a" * (8 * 1024 * 1024))
    # Slow the browser's uplink (about 4 MiB/s) so the upload takes a couple of seconds.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                  "uploadThroughput": 4 * 1024 * 1024})
    page.get_by_label("Name").fill("uploaded-disk")
    page.get_by_label("File").set_input_files(str(data))
    page.get_by_role("button", name="Upload").click()
    row = page.locator("tr", has_text="uploaded-disk")
    expect(row).to_contain_text("active", timeout=60_000)
    expect(row).to_contain_text(str(8 * 1024 * 1024))
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                  "uploadThroughput": -1})
    # The page reloaded after the upload; what the bar showed was recorded before (sessionStorage).
    seen = page.evaluate("JSON.parse(sessionStorage.getItem('seenProgress') || '[]')")
    assert any(0 < pct < 100 for pct in seen), seen
    assert seen[-1] == 100 and seen == sorted(seen), seen


def test_create_network(cloud, page):
    log_in(page, cloud, path="/networks")
    page.get_by_label("Name", exact=True).fill("blue")
    page.get_by_label("Subnet CIDR (optional)").fill("10.77.0.0/24")
    page.get_by_role("button", name="Create network").click()
    expect(page.get_by_role("status")).to_contain_text("Created network blue")
    expect(page.locator("#networks tr", has_text="blue")).to_contain_text("10.77.0.0/24")
    # A refused subnet is shown as the API's message and leaves no network behind.
    page.get_by_label("Name", exact=True).fill("bad")
    page.get_by_label("Subnet CIDR (optional)").fill("10.77.0.0/99")
    page.get_by_role("button", name="Create network").click()
    expect(page.get_by_role("alert")).to_contain_text("10.77.0.0/99")
    _, networks = cloud.admin_api()("GET", "/networking/v2.0/networks?name=bad")
    assert networks["networks"] == []


def test_admin_disables_a_compute_service_and_sees_it_marked(cloud, page):
    log_in(page, cloud, path="/admin/services")
    row = page.locator('tr[data-service="fabric-compute@dashhost"]')
    expect(row.locator('[data-field="state"]')).to_have_text("up")
    row.get_by_label("Reason to disable fabric-compute on dashhost").fill("hardware check")
    row.get_by_role("button", name="Disable").click()
    expect(row.locator('[data-field="status"]')).to_have_text("disabled: hardware check")
    _, listed = cloud.admin_api()("GET", "/compute/v2.1/os-services?binary=fabric-compute")
    assert [s["status"] for s in listed["services"]] == ["disabled"]
    row.get_by_role("button", name="Enable").click()
    expect(row.locator('[data-field="status"]')).to_have_text("enabled")


def test_a_server_named_like_a_script_shows_as_text(cloud, page):
    api = cloud.admin_api()
    api("POST", "/compute/v2.1/servers", {"server": {"name": SCRIPT_NAME, "imageRef": cloud.image_id,
                                                     "flavorRef": cloud.flavor_id}})
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    log_in(page, cloud, path="/servers")
    link = page.get_by_role("link", name=SCRIPT_NAME, exact=True)
    expect(link).to_have_text(SCRIPT_NAME)
    link.click()
    expect(page.locator("h1 .name")).to_have_text(SCRIPT_NAME)
    assert dialogs == []
    assert page.locator("script:not([src])").count() == 0


def test_a_form_without_its_csrf_token_is_refused(cloud, page):
    log_in(page, cloud, path="/networks")
    page.locator("form[action$='/networks'] input[name=csrf_token]").evaluate("e => e.remove()")
    page.get_by_label("Name", exact=True).fill("forged")
    page.get_by_role("button", name="Create network").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Request refused")
    _, networks = cloud.admin_api()("GET", "/networking/v2.0/networks?name=forged")
    assert networks["networks"] == []
    # A script request without the token is refused the same way.
    status = page.evaluate("""() => fetch('/dashboard/networks', {method: 'POST',
        headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: 'name=forged2'}).then(r => r.status)""")
    assert status == 403


def test_queues_page_requeues_dead_letters(cloud, page):
    # A queue of our own with one dead letter (no worker consumes it, so it stays put).
    with kombu.Connection(cloud.vhost.url) as connection:
        channel = connection.channel()
        for name in ("dashtest", "dashtest.dead"):
            channel.queue_declare(name, durable=True, auto_delete=False)
        kombu.Producer(channel).publish(b"lost", routing_key="dashtest.dead", exchange="", delivery_mode=2)
        log_in(page, cloud, path="/admin/queues")
        row = page.locator('tr[data-queue="dashtest"]')
        expect(row.locator('[data-field="dead"]')).to_have_text("1")
        expect(page.locator('tr[data-queue="compute"]')).to_contain_text("fabric-compute")
        page.on("dialog", lambda dialog: dialog.accept())
        row.get_by_role("button", name="Requeue dead letters").click()
        expect(page.get_by_role("status")).to_contain_text("Moved 1 dead letter(s) back to dashtest")
        expect(row.locator('[data-field="dead"]')).to_have_text("0")
        _, ready, _ = channel.queue_declare("dashtest", passive=True)
        assert ready == 1
        channel.queue_delete("dashtest")
        channel.queue_delete("dashtest.dead")


def test_logout_revokes_the_token(cloud, page):
    log_in(page, cloud)
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/dashboard/login")
    page.goto(cloud.dashboard_url + "/servers")
    expect(page).to_have_url(re.compile(r"/dashboard/login"))


def test_standalone_dashboard_needs_only_the_api(cloud, spawn, page):
    """fabric-dashboard with nothing but the API's address (database and broker settings
    point nowhere): the pages work."""
    port = free_port()
    worker = spawn([sys.executable, "bin/fabric-dashboard"], name="fabric-dashboard", env={
        "FABRIC_DASHBOARD_PORT": str(port), "FABRIC_DASHBOARD_API_URL": cloud.api_url + "/v3",
        "FABRIC_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/nothing",
        "FABRIC_RPC_TRANSPORT_URL": "amqp://nobody:nothing@127.0.0.1:1/none"})
    worker.wait_for_log("fabric dashboard listening on")
    standalone = Api(f"http://127.0.0.1:{port}")  # only for the URL
    page.goto(standalone.base + "/dashboard/login")
    page.get_by_label("User").fill("admin")
    page.get_by_label("Password").fill(cloud.password)
    page.get_by_label("Project").fill("admin")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/dashboard/overview")
    expect(page.get_by_role("heading", level=1)).to_have_text("Project admin")
