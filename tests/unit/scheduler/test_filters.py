"""Each filter on hand-built host states."""

from __future__ import annotations

import pytest

from fabric import exception
from fabric.scheduler import filters
from fabric.scheduler.filters.requirements import match_requirement
from fabric.scheduler.host_state import HostState
from fabric.scheduler.request import AFFINITY, ANTI_AFFINITY, RequestSpec


def host(name="h1", **fields) -> HostState:
    base = dict(vcpus=4, memory_mb=4096, disk_gb=40)
    base.update(fields)
    return HostState(host=name, **base)


def passes(filter_name: str, state: HostState, spec: RequestSpec) -> bool:
    return bool(filters.FILTERS[filter_name]().filter_all([state], spec))


def test_compute_filter_removes_down_and_disabled_hosts():
    spec = RequestSpec()
    assert passes("ComputeFilter", host(up=True), spec)
    assert not passes("ComputeFilter", host(up=False), spec)
    assert not passes("ComputeFilter", host(disabled=True), spec)


def test_retry_filter_removes_failed_hosts_only():
    spec = RequestSpec(ignore_hosts={"bad"})
    assert not passes("RetryFilter", host("bad"), spec)
    assert passes("RetryFilter", host("good"), spec)


@pytest.mark.parametrize(("used", "ratio", "want", "expected"), [
    (0, 1.0, 4096, True),      # exactly fits
    (1, 1.0, 4096, False),     # one MiB short
    (4096, 1.5, 2048, True),   # over-subscription allowed by the ratio
    (4096, 1.5, 2049, False),
])
def test_ram_filter_applies_allocation_ratio(used, ratio, want, expected):
    state = host(memory_mb_used=used, ram_ratio=ratio)
    assert passes("RamFilter", state, RequestSpec(memory_mb=want)) is expected


def test_core_filter_applies_allocation_ratio():
    state = host(vcpus=2, vcpus_used=31, cpu_ratio=16.0)
    assert passes("CoreFilter", state, RequestSpec(vcpus=1))
    assert not passes("CoreFilter", state, RequestSpec(vcpus=2))


def test_disk_filter_applies_allocation_ratio_and_ignores_diskless_requests():
    state = host(disk_gb=40, disk_gb_used=35, disk_ratio=1.0)
    assert passes("DiskFilter", state, RequestSpec(disk_gb=5))
    assert not passes("DiskFilter", state, RequestSpec(disk_gb=6))
    full = host(disk_gb=40, disk_gb_used=50)
    assert passes("DiskFilter", full, RequestSpec(disk_gb=0))


def test_availability_zone_filter():
    assert passes("AvailabilityZoneFilter", host(availability_zone="az1"), RequestSpec(availability_zone="az1"))
    assert not passes("AvailabilityZoneFilter", host(availability_zone="az2"), RequestSpec(availability_zone="az1"))
    assert passes("AvailabilityZoneFilter", host(availability_zone="az2"), RequestSpec())


def test_image_properties_filter_matches_host_capabilities():
    x86 = host(stats={"cpu_arch": ["x86_64", "i686"]}, hypervisor_type="qemu")
    arm = host(stats={"cpu_arch": "aarch64"}, hypervisor_type="qemu")
    unknown = host(stats={})
    spec = RequestSpec(image_properties={"architecture": "x86_64", "img_hv_type": "qemu"})
    assert passes("ImagePropertiesFilter", x86, spec)
    assert not passes("ImagePropertiesFilter", arm, spec)
    assert not passes("ImagePropertiesFilter", unknown, spec)
    # Properties the filter does not know about are not requirements.
    assert passes("ImagePropertiesFilter", unknown, RequestSpec(image_properties={"os_distro": "debian"}))


def test_image_properties_filter_reads_service_capabilities_too():
    state = host(capabilities={"vm_modes": ["hvm"]})
    assert passes("ImagePropertiesFilter", state, RequestSpec(image_properties={"hw_vm_mode": "hvm"}))
    assert not passes("ImagePropertiesFilter", state, RequestSpec(image_properties={"hw_vm_mode": "xen"}))


def test_extra_specs_filter_scopes_and_operators():
    state = host(stats={"gpus": 2, "cpu_model": "EPYC-Rome", "features": ["avx2", "sse4"]})
    ok = RequestSpec(extra_specs={"capabilities:gpus": ">= 2", "cpu_model": "<in> EPYC",
                                  "hw:cpu_policy": "dedicated"})  # hw: is for the compute driver
    assert passes("ExtraSpecsFilter", state, ok)
    assert not passes("ExtraSpecsFilter", state, RequestSpec(extra_specs={"capabilities:gpus": "= 3"}))
    assert not passes("ExtraSpecsFilter", state, RequestSpec(extra_specs={"capabilities:fpga": "1"}))


@pytest.mark.parametrize(("offered", "requirement", "expected"), [
    (4, "= 4", True), (5, "= 4", True), (3, "= 4", False),
    (4, "== 4", True), (5, "== 4", False), (5, "!= 4", True),
    (4, "<= 4", True), (5, "<= 4", False),
    ("abc", "s== abc", True), ("abc", "s!= abc", False),
    (["avx2", "sse4"], "<in> avx2", True), ("xeon-gold", "<in> gold", True),
    ("kvm", "<or> qemu <or> kvm", True), ("xen", "<or> qemu <or> kvm", False),
    ("fast", "fast", True), (["a", "b"], "b", True),
    ("many", ">= 4", False),  # numeric operator on a non-number fails
])
def test_match_requirement(offered, requirement, expected):
    assert match_requirement(offered, requirement) is expected


def test_affinity_filter_keeps_only_the_pinned_host():
    spec = RequestSpec(group_id="g", group_policy=AFFINITY, group_hosts={"h2"})
    assert passes("AffinityFilter", host("h2"), spec)
    assert not passes("AffinityFilter", host("h1"), spec)
    unpinned = RequestSpec(group_id="g", group_policy=AFFINITY)
    assert passes("AffinityFilter", host("h1"), unpinned)


def test_anti_affinity_filter_removes_hosts_holding_members():
    spec = RequestSpec(group_id="g", group_policy=ANTI_AFFINITY, group_hosts={"h1"})
    assert not passes("AntiAffinityFilter", host("h1"), spec)
    assert passes("AntiAffinityFilter", host("h2"), spec)
    # An affinity group's pin means nothing to the anti-affinity filter.
    assert passes("AntiAffinityFilter", host("h1"), RequestSpec(group_policy=AFFINITY, group_hosts={"h1"}))


def test_run_filters_counts_removals_and_describes_them():
    hosts = [host("a", up=False), host("b", memory_mb=512), host("c")]
    chosen = filters.load_filters("ComputeFilter,RamFilter,CoreFilter")
    passed, removed = filters.run_filters(chosen, hosts, RequestSpec(memory_mb=1024, vcpus=1))
    assert [h.host for h in passed] == ["c"]
    assert removed == {"ComputeFilter": 1, "RamFilter": 1, "CoreFilter": 0}
    text = filters.describe_removals(3, removed)
    assert text == "3 hosts; ComputeFilter removed 1, RamFilter removed 1"


def test_unknown_filter_name_is_a_clear_setting_error():
    with pytest.raises(exception.InvalidSetting) as caught:
        filters.load_filters("RamFilter, NoSuchFilter")
    assert "NoSuchFilter" in caught.value.message
    assert "RamFilter" in caught.value.message  # names what is accepted


def test_default_filter_list_loads():
    from fabric.config import SchedulerSection

    names = [f.name for f in filters.load_filters(SchedulerSection().filters)]
    assert names[0] == "RetryFilter" and "AntiAffinityFilter" in names


def test_the_resource_filters_in_one_pass_pass_what_each_filter_in_turn_passes():
    from fabric.config import Settings
    from fabric.db import Database
    from fabric.scheduler.scheduler import Scheduler

    scheduler = Scheduler(Settings(), Database("sqlite://"))
    states = [host(f"h{i}", vcpus=8, memory_mb=8192, disk_gb=100, vcpus_used=i % 9, memory_mb_used=(i * 1024) % 9216,
                   disk_gb_used=(i * 10) % 110, up=i % 7 != 0, disabled=i % 11 == 0) for i in range(100)]
    for spec in (RequestSpec(vcpus=2, memory_mb=2048, disk_gb=20), RequestSpec(vcpus=8, memory_mb=1024),
                 RequestSpec(vcpus=1, memory_mb=512, disk_gb=0)):
        expected = filters.run_filters(scheduler.filters, states, spec)[0]
        assert expected and scheduler._resources_only(states, spec) == expected
    # A request another filter applies to (a group, here) goes through every filter.
    grouped = RequestSpec(vcpus=1, memory_mb=512, group_id="g", group_policy=ANTI_AFFINITY, group_hosts={"h1"})
    assert scheduler._resources_only(states, grouped) is None
    # Nothing fits: the filters in turn say which removed what.
    with pytest.raises(exception.NoValidHost, match="RamFilter removed"):
        scheduler._ranked(RequestSpec(vcpus=1, memory_mb=65536), 1, states)
