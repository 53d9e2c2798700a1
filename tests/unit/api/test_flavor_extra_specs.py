"""A flavor's extra specs (``/flavors/{id}/os-extra_specs``), over the API's unit harness:
what ``openstack flavor create | set | unset --property`` sends, and bad input refused by name."""

from __future__ import annotations

import concurrent.futures

import pytest

from fabric.api.compute.flavor_extra_specs import MAX_ITEMS
from fabric.db.models import Flavor
from tests.unit.api.test_compute import admin_h, make_flavor

C = "/compute/v2.1"


@pytest.fixture
def specs(api):
    """The extra-specs URL of a new flavor."""
    return f"{C}/flavors/{make_flavor(api)['id']}/os-extra_specs"


def test_set_show_update_and_delete(api, specs):
    h = admin_h(api)
    answer = api.app.post_json(specs, {"extra_specs": {"hw:cpu_policy": "shared", "aggregate_instance_extra_specs:ssd": "true"}},
                               headers=h).json
    assert answer == {"extra_specs": {"hw:cpu_policy": "shared", "aggregate_instance_extra_specs:ssd": "true"}}
    # A second POST merges: only the given items are answered, all are kept.
    assert api.app.post_json(specs, {"extra_specs": {"n": 4, "flag": True}}, headers=h).json == {
        "extra_specs": {"n": "4", "flag": "True"}}
    assert api.app.get(specs, headers=h).json["extra_specs"] == {
        "hw:cpu_policy": "shared", "aggregate_instance_extra_specs:ssd": "true", "n": "4", "flag": "True"}
    assert api.app.put_json(f"{specs}/n", {"n": "8"}, headers=h).json == {"n": "8"}
    assert api.app.get(f"{specs}/n", headers=h).json == {"n": "8"}
    api.app.delete(f"{specs}/flag", headers=h, status=202)
    gone = api.app.get(f"{specs}/flag", headers=h, status=404)
    assert "flag" in gone.json["itemNotFound"]["message"]
    api.app.delete(f"{specs}/flag", headers=h, status=404)
    assert set(api.app.get(specs, headers=h).json["extra_specs"]) == {
        "hw:cpu_policy", "aggregate_instance_extra_specs:ssd", "n"}


def test_members_read_but_do_not_change(api, specs):
    member = api.make_member()
    api.app.post_json(specs, {"extra_specs": {"k": "v"}}, headers=admin_h(api))
    assert api.app.get(specs, headers=member.headers).json == {"extra_specs": {"k": "v"}}
    assert api.app.get(f"{specs}/k", headers=member.headers).json == {"k": "v"}
    api.app.post_json(specs, {"extra_specs": {"k": "x"}}, headers=member.headers, status=403)
    api.app.put_json(f"{specs}/k", {"k": "x"}, headers=member.headers, status=403)
    api.app.delete(f"{specs}/k", headers=member.headers, status=403)
    assert api.app.get(specs, headers=member.headers).json == {"extra_specs": {"k": "v"}}


@pytest.mark.parametrize("body, named", [
    ({"extra_specs": {"bad/key": "v"}}, "bad/key"),
    ({"extra_specs": {"": "v"}}, "extra spec keys"),
    ({"extra_specs": {"k": "v" * 256}}, "at most 255"),
    ({"extra_specs": {"k": ["list"]}}, "string, number or boolean"),
    ({"extra_specs": {"k": None}}, "extra_specs"),
    ({"extra_specs": "k=v"}, "extra_specs"),
    ({}, "extra_specs"),
])
def test_bad_items_are_refused_by_name_and_nothing_is_written(api, specs, body, named):
    h = admin_h(api)
    refused = api.app.post_json(specs, body, headers=h, status=400)
    assert named in refused.json["badRequest"]["message"]
    assert api.app.get(specs, headers=h).json == {"extra_specs": {}}


def test_a_put_names_exactly_the_key_of_its_url(api, specs):
    h = admin_h(api)
    for body in ({"other": "v"}, {"k": "v", "other": "v"}, {}, ["k"]):
        refused = api.app.put_json(f"{specs}/k", body, headers=h, status=400)
        assert "'k'" in refused.json["badRequest"]["message"]
    refused = api.app.put_json(f"{specs}/k", {"k": "v" * 256}, headers=h, status=400)
    assert "at most 255" in refused.json["badRequest"]["message"]
    assert api.app.get(specs, headers=h).json == {"extra_specs": {}}


def test_an_unknown_flavor_is_404_naming_it(api):
    h = admin_h(api)
    for answer in (api.app.get(f"{C}/flavors/nope/os-extra_specs", headers=h, status=404),
                   api.app.post_json(f"{C}/flavors/nope/os-extra_specs", {"extra_specs": {"k": "v"}}, headers=h,
                                     status=404),
                   api.app.put_json(f"{C}/flavors/nope/os-extra_specs/k", {"k": "v"}, headers=h, status=404),
                   api.app.delete(f"{C}/flavors/nope/os-extra_specs/k", headers=h, status=404)):
        assert "nope" in answer.json["itemNotFound"]["message"]


def test_too_many_items_are_refused(api, specs):
    h = admin_h(api)
    api.app.post_json(specs, {"extra_specs": {f"k{i}": "v" for i in range(MAX_ITEMS)}}, headers=h)
    refused = api.app.put_json(f"{specs}/one-more", {"one-more": "v"}, headers=h, status=400)
    assert f"at most {MAX_ITEMS}" in refused.json["badRequest"]["message"]
    assert len(api.app.get(specs, headers=h).json["extra_specs"]) == MAX_ITEMS


def test_concurrent_changes_all_land(api, specs):
    h = admin_h(api)
    flavor_id = specs.split("/")[-2]

    def put(i: int) -> None:
        api.app.put_json(f"{specs}/k{i}", {f"k{i}": str(i)}, headers=h)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(put, range(12)))
    with api.db.begin() as session:
        assert session.get(Flavor, flavor_id).extra_specs == {f"k{i}": str(i) for i in range(12)}
