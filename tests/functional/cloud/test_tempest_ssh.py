"""The guideline's SSH-validation tests, with tempest logging in to a real guest.

The guideline run (tests/functional/api/test_tempest_interop.py) has fake guests and skips
the tests that log in to the server tempest booted (``SSH_VALIDATION`` there). Here the same
tests, selected by that same pattern from the same guideline files, run with tempest's
configuration from there and ``[validation] run_validation = true`` against the cloud of real
QEMU guests (tests/fixtures/cloud.py): tempest makes its key pair (its ECDSA public key
imported), a security group letting SSH in, and boots the guest image with them; the guest
reads its hostname and public keys from the metadata service and its dropbear accepts the
key (tools/guest_image.py); tempest compares ``hostname`` and the processors in
``/proc/cpuinfo`` with the server's name and flavor over SSH to the fixed address.

Tempest runs inside the first host's namespace, where the API is on the same loopback
address (the host's forwarder) and the guest's network is on-link once the guest runs
there: a flavor whose extra spec matches an aggregate holding only that host places it.
One class of the guideline's (the tests' own, not the subclasses inheriting them): one boot.
"""

from __future__ import annotations

import configparser
import io
import re
import secrets

import pytest

from tests.fixtures.cloud import PASSWORD, guest_image
from tests.functional.api.test_tempest_interop import GUIDELINES, SSH_VALIDATION, TEMPEST_CONF, run_guideline

pytestmark = [pytest.mark.functional, pytest.mark.slow]

CIDR = "10.9.72.0/24"
#: The aggregate metadata key (and flavor extra spec) that places tempest's guest on the host
#: tempest runs on.
PIN = "tempest_ssh"


def ssh_validation_tests() -> list[str]:
    """The guideline's tests (``module.Class.test`` as the guideline names them) that the
    guideline run skips for SSH validation."""
    names = [line.split()[1] for guideline in GUIDELINES for line in guideline.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    return [name for name in names if re.search(SSH_VALIDATION, name)]


def tempest_conf(base: str, overrides: dict[str, dict[str, str]]) -> str:
    """``base`` (a tempest.conf) with the options of ``overrides`` (section -> option -> value)
    set."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read_string(base)
    for section, options in overrides.items():
        if not parser.has_section(section):
            parser.add_section(section)
        parser[section].update(options)
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()


def test_the_guideline_ssh_validation_tests_pass_on_a_real_guest(cloud, projects, tmp_path):
    tests = ssh_validation_tests()
    assert len(tests) == 2, tests  # the hostname and the vCPU count
    env = projects("tempest-ssh").env
    host = cloud.hosts.hosts[0]
    unique = secrets.token_hex(3)
    network, aggregate = f"tempest-ssh-{unique}", f"tempest-ssh-{unique}"
    cloud.osc(env, "network", "create", "--share", network)
    cloud.osc(env, "subnet", "create", "--network", network, "--subnet-range", CIDR, f"{network}-sub")
    cloud.osc(env, "aggregate", "create", "--property", f"{PIN}=true", aggregate)
    flavor = added = None
    try:
        added = cloud.osc(env, "aggregate", "add", "host", aggregate, host.name)
        made = cloud.osc(env, "flavor", "create", "--public", "--ram", "128", "--vcpus", "1", "--disk", "0",
                         "--property", f"aggregate_instance_extra_specs:{PIN}=true", f"tempest.ssh-{unique}")
        flavor = made["id"]
        # The CLI only logs a refused property: without it the guest could land on the other host.
        assert made["properties"] == {f"aggregate_instance_extra_specs:{PIN}": "true"}, made
        base = TEMPEST_CONF.format(workspace=tmp_path / "tempest", password=PASSWORD, auth_url=cloud.auth_url,
                                   image=cloud.image_id, image_alt=cloud.image_id, flavor=flavor, flavor_alt=flavor,
                                   public_network="", public_network_name="")
        conf = tempest_conf(base, {
            # Servers boot on the shared network (tempest finds it by name), not on one per project.
            "auth": {"create_isolated_networks": "false"},
            "compute": {"fixed_network_name": network},
            "validation": {"run_validation": "true", "connect_method": "fixed", "auth_method": "keypair",
                           "network_for_ssh": network, "ip_version_for_ssh": "4",
                           "image_ssh_user": guest_image.SSH_USER, "ssh_timeout": "180", "connect_timeout": "30"},
        })
        # The test's own class only: its name, then tempest's [id-...] attribute.
        run_guideline(tmp_path, conf, [re.escape(test) + r"\[" for test in tests], {}, len(tests),
                      expected_skips={}, namespace=host.namespace)
    finally:
        if flavor:
            cloud.osc(env, "flavor", "delete", flavor, json_out=False)
        if added:
            cloud.osc(env, "aggregate", "remove", "host", aggregate, host.name, json_out=False)
        cloud.osc(env, "aggregate", "delete", aggregate, json_out=False)

