"""The OpenStack Powered Compute interoperability run: every required test of guideline 2020.06
(:data:`GUIDELINES`, kept in the repository: nothing downloads at run time; the volume
capabilities in a list of their own), in one tempest run (tempest from PyPI) against one cloud
of worker processes (fabric-api, -scheduler, -ipam, -objectstore, a fabric-volume on host h1
with qcow2 files exported over NBD, and compute and network workers on two hosts, fake virt and
network drivers) on RabbitMQ and PostgreSQL, configured as a cloud claiming compatibility would
be: with what fabric has turned on (IPv6 subnets, Block Storage, so the guideline's server
tests also run booted from a volume), without SSH validation.

Tests are selected by their idempotent ids (tempest renames tests; ids stay), and all of them
run. A failure must be one of :data:`KNOWN_GAPS` (each a gap in fabric, named with its reason
and the area that owns it, to be closed and removed from the table), a skip one of
:data:`SKIPS_EXPECTED` (each a feature the cloud does not claim, with the reason), and at least
:data:`AT_LEAST` tests must pass, so a run that discovered nothing, skipped what it should run,
or lost a passing test cannot pass.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fabric.api.bootstrap import bootstrap
from tests.fixtures.process_cloud import COMPUTE, Api, start_cloud

pytestmark = [pytest.mark.functional, pytest.mark.slow]

PASSWORD = "tempest-compute-pw"
#: The guideline's required tests outside the volume capabilities, and those in them.
GUIDELINES = (Path(__file__).with_name("test_tempest_compute_interop_2020_06.txt"),
              Path(__file__).with_name("test_tempest_volume_interop_2020_06.txt"))
#: Guideline tests that still fail, and why (regular expressions on the test id or the class
#: whose setUpClass/tearDownClass fails). A gap closed is removed here and counted in AT_LEAST.
KNOWN_GAPS: dict[str, str] = {}
#: The guideline tests that log in to a server over SSH (tempest's validation): skipped here,
#: run against real guests by tests/functional/cloud/test_tempest_ssh.py, which selects them
#: with this pattern (one list for both runs).
SSH_VALIDATION = r"\.test_host_name_is_same_as_server_name$|\.test_verify_created_server_vcpus$"
#: Guideline tests tempest may skip, and why (regular expressions on the test id or the class
#: whose setUpClass skips, as KNOWN_GAPS): only features this cloud does not claim. Any other skip
#: fails the run, so a setting that turns a feature off cannot hide tests.
SKIPS_EXPECTED: dict[str, str] = {
    SSH_VALIDATION:
        "SSH validation ([validation] run_validation = false): the fake virt driver's guests are records "
        "with no sshd, hostname or /proc/cpuinfo to read over SSH; tests/functional/cloud/test_tempest_ssh.py "
        "runs these tests (selected by this same pattern) against real guests",
}
AT_LEAST = 292  # all 298 tests the 227 ids select (inherited tests run in each class) but the 6 SSH ones

TEMPEST_CONF = """\
[DEFAULT]
log_file = {workspace}/tempest.log
[auth]
admin_username = admin
admin_password = {password}
admin_project_name = admin
admin_domain_name = Default
use_dynamic_credentials = true
create_isolated_networks = true
[identity]
uri_v3 = {auth_url}
auth_version = v3
region = RegionOne
[identity-feature-enabled]
api_v2 = false
trust = false
federation = false
application_credentials = true
[compute]
image_ref = {image}
image_ref_alt = {image_alt}
flavor_ref = {flavor}
flavor_ref_alt = {flavor_alt}
min_compute_nodes = 2
build_timeout = 120
max_microversion = latest
[compute-feature-enabled]
resize = true
cold_migration = true
snapshot = true
console_output = true
pause = true
suspend = true
shelve = false
shelve_migrate = false
live_migration = false
change_password = false
rescue = false
interface_attach = false
personality = false
config_drive = false
metadata_service = false
vnc_console = false
spice_console = false
serial_console = false
attach_encrypted_volume = false
enable_instance_password = true
[image]
build_timeout = 120
[image-feature-enabled]
api_v1 = false
api_v2 = true
import_image = false
image_format_enforcement = false
[network]
project_network_cidr = 10.100.0.0/16
project_network_mask_bits = 28
public_network_id = {public_network}
floating_network_name = {public_network_name}
build_timeout = 120
[network-feature-enabled]
ipv6 = true
api_extensions = all
port_security = false
floating_ips = true
[validation]
run_validation = false
[service_available]
nova = true
neutron = true
glance = true
cinder = true
swift = false
[volume]
catalog_type = block-storage
build_timeout = 120
volume_size = 1
storage_protocol = nbd
vendor_name = fabric
disk_format = raw,qcow2
min_microversion = 3.0
max_microversion = 3.0
[volume-feature-enabled]
snapshot = true
clone = true
backup = false
# The extensions fabric lists (a cloud names its own; "all" would look for Cinder's os-hosts).
api_extensions = os-availability-zone,os-quota-sets,os-services,os-volume-actions,os-vol-host-attr,os-vol-tenant-attr,os-extended-snapshot-attributes,os-vol-image-meta
extend_attached_volume = false
manage_volume = false
manage_snapshot = false
"""


def guideline_ids() -> list[str]:
    """The idempotent ids of the guideline's required tests (a line: capability, test name,
    id)."""
    return [line.split()[2] for guideline in GUIDELINES for line in guideline.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def _prepare(api: Api) -> dict:
    """Two public flavors, two public images with bytes and an external network: what tempest's
    configuration names."""
    flavors = [api.ok("POST", f"{COMPUTE}/flavors", {"flavor": {"name": name, "ram": ram, "vcpus": 1, "disk": 1}})
               ["flavor"]["id"] for name, ram in (("tempest.a", 64), ("tempest.b", 96))]
    images = []
    for name in ("tempest-image-a", "tempest-image-b"):
        image = api.ok("POST", "/image/v2/images", {"name": name, "disk_format": "raw", "container_format": "bare",
                                                    "visibility": "public"})["id"]
        api.ok("PUT", f"/image/v2/images/{image}/file", raw=b"\0" * 4096)
        images.append(image)
    public = api.ok("POST", "/networking/v2.0/networks", {"network": {"name": "public", "router:external": True,
                                                                      "shared": False}})["network"]
    api.ok("POST", "/networking/v2.0/subnets", {"subnet": {"network_id": public["id"], "ip_version": 4,
                                                           "cidr": "172.24.4.0/24"}})
    return {"flavor": flavors[0], "flavor_alt": flavors[1], "image": images[0], "image_alt": images[1],
            "public_network": public["id"], "public_network_name": public["name"]}


def test_tempest_interop_guideline(database_servers, postgres_db, rabbit_vhost, spawn, tmp_path):
    db_url = postgres_db.url.render_as_string(hide_password=False)
    bootstrap(postgres_db, PASSWORD)
    cloud = start_cloud(spawn, tmp_path, db_url, rabbit_vhost, volume_host="h1")
    api = Api(cloud.api_port)
    api.login(PASSWORD)
    names = _prepare(api)

    run_guideline(tmp_path, TEMPEST_CONF.format(workspace=tmp_path / "tempest", password=PASSWORD,
                                               auth_url=f"http://127.0.0.1:{cloud.api_port}/v3", **names),
                  guideline_ids(), KNOWN_GAPS, AT_LEAST, expected_skips=SKIPS_EXPECTED)


def run_guideline(tmp_path: Path, conf: str, ids: list[str], known_gaps: dict[str, str], at_least: int,
                  expected_skips: dict[str, str] | None = None, namespace: str | None = None) -> None:
    """Run tempest (from the virtualenv, its workspace in ``tmp_path/tempest``, configured by
    ``conf``) on the tests ``ids`` (regular expressions on test ids, as tempest's include list
    takes them), inside network namespace ``namespace`` when given: every failure must match
    one of ``known_gaps``, every skip one of ``expected_skips`` (when given), and at least
    ``at_least`` must pass. The skipped tests are printed with tempest's reasons; the whole
    output is kept in ``tmp_path/tempest-output.txt``."""
    tempest = Path(sys.executable).with_name("tempest")
    workspace = tmp_path / "tempest"
    env = dict(os.environ, HOME=str(tmp_path))  # tempest's workspace registry: this test's own
    subprocess.run([str(tempest), "init", str(workspace)], check=True, capture_output=True, timeout=120, env=env)
    (workspace / "etc" / "tempest.conf").write_text(conf)
    include = workspace / "include.txt"
    include.write_text("".join(f"{ident}\n" for ident in ids))
    inside = ["ip", "netns", "exec", namespace] if namespace else []
    run = subprocess.run([*inside, str(tempest), "run", "--include-list", str(include), "--concurrency", "2"],
                         cwd=workspace, capture_output=True, text=True, timeout=1800, env=env)
    output = run.stdout + run.stderr
    (tmp_path / "tempest-output.txt").write_text(output)
    failed = sorted(set(_results(output, "FAILED")))
    skipped = sorted(set(_results(output, "SKIPPED")))
    print(f"\ntempest skipped {len(skipped)}:", *(f"  {test}: {reason}" for test, reason in skipped), sep="\n")
    unexpected = [test for test in failed if not any(re.search(gap, test) for gap in known_gaps)]
    unexpected_skips = [] if expected_skips is None else [
        f"{test}: {reason}" for test, reason in skipped if not any(re.search(skip, test) for skip in expected_skips)]
    passed = int(re.search(r"- Passed: (\d+)", output).group(1)) if "- Passed:" in output else 0
    print(f"tempest passed {passed}, failed {len(failed)}:", *(f"  {test}" for test in failed), sep="\n")
    assert "- Passed:" in output, f"tempest did not run:\n{output[-6000:]}"
    assert not unexpected, f"tempest failed {len(unexpected)} outside the known gaps: {unexpected}:\n{output[-6000:]}"
    assert not unexpected_skips, f"tempest skipped {len(unexpected_skips)} outside the expected skips: {unexpected_skips}"
    assert passed >= at_least, f"only {passed} guideline tests passed:\n{output[-3000:]}"


def _results(output: str, status: str) -> list:
    """The tests (or ``setUpClass (module.Class)``) that ended with ``status`` in tempest's
    output: their names, and for SKIPPED (test, reason) pairs."""
    found = re.findall(rf"^\{{\d+\}} (.+?) (?:\[[^\]]*\] )?\.\.\. {status}:? ?(.*)$", output, re.MULTILINE)
    return found if status == "SKIPPED" else [test for test, _ in found]
