"""Block Storage v3 through the HTTP API in-process (webtest, SQLite), the volume worker's
handlers answering the API's casts on real qcow2 files."""

from __future__ import annotations

import pytest

from fabric import config, servicegroup
from fabric.context import RequestContext
from fabric.volume.manager import VolumeManager
from fabric.volume.rpcapi import BINARY, TOPIC

V = "/volume/v3"


@pytest.fixture
def cloud(api, tmp_path):
    """The API with one volume host whose worker runs each cast at once."""
    servicegroup.register(api.db, host="vol1", binary=BINARY, topic=TOPIC, version="1")
    settings = config.Settings().replace(default={"data_dir": str(tmp_path / "vol1"), "host": "vol1"},
                                         volume={"export_port_min": 21809, "export_port_max": 21908})
    worker = VolumeManager(settings, host="vol1", db=api.db)
    admin = RequestContext.admin()
    for method in ("create_volume", "delete_volume", "extend_volume", "create_snapshot", "delete_snapshot"):
        api.recorder.answers[method] = (lambda name: lambda kwargs: getattr(worker, name)(
            admin, **{k: v for k, v in kwargs.items() if k not in ("host", "request_id")}))(method)
    api.member = api.make_member()
    yield api
    for export in worker.exports.records():
        worker.exports.stop(export["volume_id"])


def _create(cloud, status=202, headers=None, **volume):
    return cloud.app.post_json(f"{V}/volumes", {"volume": volume}, headers=headers or cloud.member.headers,
                               status=status).json


def test_volume_lifecycle_through_the_api(cloud):
    headers = cloud.member.headers
    made = _create(cloud, size=1, name="data", metadata={"k": "v"})["volume"]
    assert made["status"] == "creating" and made["bootable"] == "false"
    shown = cloud.app.get(f"{V}/volumes/{made['id']}", headers=headers).json["volume"]
    assert (shown["status"], shown["size"], shown["metadata"], shown["volume_type"]) == (
        "available", 1, {"k": "v"}, "__DEFAULT__")
    assert "os-vol-host-attr:host" not in shown  # admins only

    cloud.app.put_json(f"{V}/volumes/{made['id']}", {"volume": {"name": "renamed"}}, headers=headers)
    cloud.app.post_json(f"{V}/volumes/{made['id']}/metadata", {"metadata": {"x": "1"}}, headers=headers)
    cloud.app.delete(f"{V}/volumes/{made['id']}/metadata/k", headers=headers)
    cloud.app.post_json(f"{V}/volumes/{made['id']}/action", {"os-extend": {"new_size": 2}}, headers=headers,
                        status=202)
    cloud.app.post_json(f"{V}/volumes/{made['id']}/action", {"os-set_bootable": {"bootable": True}},
                        headers=headers)
    shown = cloud.app.get(f"{V}/volumes/{made['id']}", headers=headers).json["volume"]
    assert (shown["name"], shown["metadata"], shown["size"], shown["bootable"]) == ("renamed", {"x": "1"}, 2,
                                                                                     "true")

    snap = cloud.app.post_json(f"{V}/snapshots", {"snapshot": {"volume_id": made["id"], "name": "s"}},
                               headers=headers, status=202).json["snapshot"]
    assert cloud.app.get(f"{V}/snapshots/{snap['id']}", headers=headers).json["snapshot"]["status"] == "available"
    refused = cloud.app.delete(f"{V}/volumes/{made['id']}", headers=headers, status=400).json
    assert "snapshot" in refused["badRequest"]["message"]
    copy = _create(cloud, snapshot_id=snap["id"])["volume"]
    assert cloud.app.get(f"{V}/volumes/{copy['id']}", headers=headers).json["volume"]["size"] == 2
    cloud.app.delete(f"{V}/snapshots/{snap['id']}", headers=headers, status=202)
    cloud.app.delete(f"{V}/volumes/{made['id']}", headers=headers, status=202)
    cloud.app.get(f"{V}/volumes/{made['id']}", headers=headers, status=404)
    listed = cloud.app.get(f"{V}/volumes", headers=headers).json["volumes"]
    assert [v["id"] for v in listed] == [copy["id"]]


def test_listing_filters_pages_and_sorts(cloud):
    headers = cloud.member.headers
    ids = [_create(cloud, size=1, name=f"v{i}")["volume"]["id"] for i in range(5)]
    by_name = cloud.app.get(f"{V}/volumes/detail?sort=name:asc", headers=headers).json["volumes"]
    assert [v["name"] for v in by_name] == [f"v{i}" for i in range(5)]
    first = cloud.app.get(f"{V}/volumes/detail?sort=name:asc&limit=2", headers=headers).json
    assert [v["name"] for v in first["volumes"]] == ["v0", "v1"] and "marker=" in first["volumes_links"][0]["href"]
    second = cloud.app.get(f"{V}/volumes?sort_key=name&sort_dir=asc&limit=2&marker={first['volumes'][1]['id']}",
                           headers=headers).json
    assert [v["name"] for v in second["volumes"]] == ["v2", "v3"]
    assert [v["id"] for v in cloud.app.get(f"{V}/volumes?name=v3", headers=headers).json["volumes"]] == [ids[3]]
    assert cloud.app.get(f"{V}/volumes?status=error", headers=headers).json["volumes"] == []
    bad = cloud.app.get(f"{V}/volumes?sort=colour", headers=headers, status=400).json
    assert "colour" in bad["badRequest"]["message"]
    other = cloud.make_member()
    assert cloud.app.get(f"{V}/volumes", headers=other.headers).json["volumes"] == []
    cloud.app.get(f"{V}/volumes/{ids[0]}", headers=other.headers, status=404)
    every = cloud.app.get(f"{V}/volumes?all_tenants=1", headers=cloud.admin.headers).json["volumes"]
    assert set(ids) <= {v["id"] for v in every}


@pytest.mark.parametrize(("volume", "named"), [
    ({"size": 0}, "0"), ({"size": "big"}, "big"), ({"size": 1, "availability_zone": "mars"}, "mars"),
    ({"size": 1, "metadata": {"k": 5}}, "5"), ({"size": 1, "colour": "red"}, "colour"), ({}, "size"),
    ({"size": 1, "imageRef": "6d1f0ab4-0000-4000-8000-00000000abcd"}, "6d1f0ab4"),
])
def test_bad_input_is_a_4xx_naming_the_value_and_writes_nothing(cloud, volume, named):
    answer = _create(cloud, status="*", **volume)
    key, = answer
    assert key in ("badRequest", "itemNotFound") and named in answer[key]["message"]
    assert cloud.app.get(f"{V}/volumes", headers=cloud.member.headers).json["volumes"] == []


def test_quota_refusal_is_413_and_quota_set_changes_it(cloud):
    project = cloud.member.project_id
    cloud.app.put_json(f"{V}/os-quota-sets/{project}", {"quota_set": {"gigabytes": 3, "volumes": 5}},
                       headers=cloud.admin.headers)
    _create(cloud, size=2)
    refused = _create(cloud, status=413, size=2)
    assert "gigabytes" in refused["overLimit"]["message"]
    quota = cloud.app.get(f"{V}/os-quota-sets/{project}?usage=true", headers=cloud.member.headers).json["quota_set"]
    assert quota["gigabytes"] == {"limit": 3, "in_use": 2, "reserved": 0, "allocated": 0}
    assert quota["volumes"]["in_use"] == 1
    limits = cloud.app.get(f"{V}/limits", headers=cloud.member.headers).json["limits"]["absolute"]
    assert (limits["maxTotalVolumeGigabytes"], limits["totalGigabytesUsed"]) == (3, 2)
    cloud.app.get(f"{V}/os-quota-sets/{cloud.admin.project_id}", headers=cloud.member.headers, status=403)


def test_catalogue_documents(cloud):
    headers = cloud.member.headers
    for path in ("/volume", V):
        [version] = cloud.app.get(path).json["versions"]
        assert version["id"] == "v3.0" and version["links"][0]["href"].endswith("/volume/v3/")
    [kind] = cloud.app.get(f"{V}/types", headers=headers).json["volume_types"]
    assert kind["name"] == "__DEFAULT__"
    assert cloud.app.get(f"{V}/types/{kind['id']}", headers=headers).json["volume_type"]["id"] == kind["id"]
    zones = cloud.app.get(f"{V}/os-availability-zone", headers=headers).json["availabilityZoneInfo"]
    assert zones == [{"zoneName": "nova", "zoneState": {"available": True}}]
    [service] = cloud.app.get(f"{V}/os-services", headers=cloud.admin.headers).json["services"]
    assert (service["host"], service["state"]) == ("vol1", "up")
    cloud.app.get(f"{V}/os-services", headers=headers, status=403)
    assert cloud.app.get(f"{V}/extensions", headers=headers).json["extensions"]
    catalog = cloud.app.get("/v3/auth/catalog", headers=headers).json["catalog"]
    types = {entry["type"]: entry["endpoints"][0]["url"] for entry in catalog}
    assert types["block-storage"] == types["volumev3"] == "http://fabric.test/volume/v3"


#: Attributes Cinder's API extensions add to a volume or snapshot on a GET only.
EXTENDED_VOLUME = {"os-vol-tenant-attr:tenant_id", "volume_image_metadata"}
EXTENDED_SNAPSHOT = {"os-extended-snapshot-attributes:project_id", "os-extended-snapshot-attributes:progress"}


def test_create_and_update_answer_without_the_extension_attributes_a_get_shows(cloud):
    """Cinder's create and update answers carry no extension attributes (tempest's schemas refuse
    them there); its show and detailed listings do."""
    headers = cloud.member.headers
    made = _create(cloud, size=1, name="plain")["volume"]
    assert not EXTENDED_VOLUME & set(made)
    changed = cloud.app.put_json(f"{V}/volumes/{made['id']}", {"volume": {"name": "renamed"}},
                                 headers=headers).json["volume"]
    assert changed["name"] == "renamed" and not EXTENDED_VOLUME & set(changed)
    shown = cloud.app.get(f"{V}/volumes/{made['id']}", headers=headers).json["volume"]
    assert shown["os-vol-tenant-attr:tenant_id"] == cloud.member.project_id
    [listed] = cloud.app.get(f"{V}/volumes/detail", headers=headers).json["volumes"]
    assert listed["os-vol-tenant-attr:tenant_id"] == cloud.member.project_id

    snap = cloud.app.post_json(f"{V}/snapshots", {"snapshot": {"volume_id": made["id"], "name": "s"}},
                               headers=headers, status=202).json["snapshot"]
    assert not EXTENDED_SNAPSHOT & set(snap)
    renamed = cloud.app.put_json(f"{V}/snapshots/{snap['id']}", {"snapshot": {"name": "t"}},
                                 headers=headers).json["snapshot"]
    assert renamed["name"] == "t" and not EXTENDED_SNAPSHOT & set(renamed)
    assert EXTENDED_SNAPSHOT <= set(cloud.app.get(f"{V}/snapshots/{snap['id']}", headers=headers).json["snapshot"])
    [brief] = cloud.app.get(f"{V}/snapshots", headers=headers).json["snapshots"]
    assert not EXTENDED_SNAPSHOT & set(brief)


def test_versions_root_is_multiple_choices_and_v3_is_ok(cloud):
    """Cinder's root answers 300 Multiple Choices (clients' version discovery expects it)."""
    assert cloud.app.get("/volume", status=300).json["versions"][0]["id"] == "v3.0"
    assert cloud.app.get(V, status=200).json["versions"][0]["id"] == "v3.0"


def test_snapshot_without_a_volume_is_404_and_one_metadata_item_is_set_by_put(cloud):
    headers = cloud.member.headers
    missing = cloud.app.post_json(f"{V}/snapshots", {"snapshot": {"volume_id": None, "name": "s"}},
                                  headers=headers, status=404).json
    assert "Volume None" in missing["itemNotFound"]["message"]
    volume = _create(cloud, size=1)["volume"]
    snap = cloud.app.post_json(f"{V}/snapshots", {"snapshot": {"volume_id": volume["id"], "metadata": {"a": "1"}}},
                               headers=headers, status=202).json["snapshot"]
    url = f"{V}/snapshots/{snap['id']}/metadata"
    assert cloud.app.put_json(f"{url}/a", {"meta": {"a": "2"}}, headers=headers).json == {"meta": {"a": "2"}}
    cloud.app.put_json(f"{url}/b", {"meta": {"a": "3"}}, headers=headers, status=400)
    assert cloud.app.get(url, headers=headers).json == {"metadata": {"a": "2"}}


@pytest.mark.parametrize("kind", ["volumes", "snapshots"])
def test_another_projects_metadata_is_404_whatever_the_body_and_unchanged(cloud, kind):
    """Volumes and snapshots share their metadata resources: each refusal is the same."""
    volume = _create(cloud, size=1, metadata={"a": "1"})["volume"]
    ident = volume["id"] if kind == "volumes" else cloud.app.post_json(
        f"{V}/snapshots", {"snapshot": {"volume_id": volume["id"], "metadata": {"a": "1"}}},
        headers=cloud.member.headers, status=202).json["snapshot"]["id"]
    url, stranger = f"{V}/{kind}/{ident}/metadata", cloud.make_member().headers
    cloud.app.get(url, headers=stranger, status=404)
    cloud.app.post_json(url, {"metadata": {"b": "2"}}, headers=stranger, status=404)
    cloud.app.put_json(url, {"metadata": {}}, headers=stranger, status=404)
    cloud.app.get(f"{url}/a", headers=stranger, status=404)
    cloud.app.put_json(f"{url}/a", {"meta": {"wrong": "key"}}, headers=stranger, status=404)
    cloud.app.delete(f"{url}/a", headers=stranger, status=404)
    assert cloud.app.get(url, headers=cloud.member.headers).json == {"metadata": {"a": "1"}}
    missing = cloud.app.get(f"{url}/zz", headers=cloud.member.headers, status=404).json
    assert f"zz of {kind[:-1]} {ident}" in missing["itemNotFound"]["message"]


def test_every_answer_names_its_microversion_and_the_empty_id_is_404(cloud):
    """Clients that ask for a microversion check the answer's header on every success, a delete's
    and a metadata change's too; /volumes/ names the empty id, which no volume has."""
    headers = {**cloud.member.headers, "OpenStack-API-Version": "volume 3.0"}
    made = _create(cloud, size=1, headers=headers)["volume"]
    answers = [cloud.app.get(f"{V}/volumes/{made['id']}/metadata", headers=headers),
               cloud.app.post_json(f"{V}/volumes/{made['id']}/metadata", {"metadata": {"k": "v"}}, headers=headers),
               cloud.app.get(f"{V}/extensions", headers=headers),
               cloud.app.get(f"{V}/os-availability-zone", headers=headers),
               cloud.app.delete(f"{V}/volumes/{made['id']}", headers=headers, status=202)]
    assert [a.headers.get("OpenStack-API-Version") for a in answers] == ["volume 3.0"] * len(answers)
    for method in ("get", "put", "delete"):
        refused = getattr(cloud.app, method)(f"{V}/volumes/", headers=headers, status=404).json
        assert "Volume ''" in refused["itemNotFound"]["message"]


def test_a_full_page_links_to_the_next_even_when_nothing_follows(cloud):
    """Cinder's paging: a page holding ``limit`` rows has a next link (the last page then is empty)."""
    headers = cloud.member.headers
    for name in ("a", "b"):
        _create(cloud, size=1, name=name)
    first = cloud.app.get(f"{V}/volumes?limit=1&sort=name:asc", headers=headers).json
    second = cloud.app.get(first["volumes_links"][0]["href"].replace("http://fabric.test", ""), headers=headers).json
    assert [v["name"] for v in second["volumes"]] == ["b"] and second["volumes_links"]
    last = cloud.app.get(second["volumes_links"][0]["href"].replace("http://fabric.test", ""), headers=headers).json
    assert last["volumes"] == [] and "volumes_links" not in last
    unfilled = cloud.app.get(f"{V}/volumes?limit=3", headers=headers).json
    assert len(unfilled["volumes"]) == 2 and "volumes_links" not in unfilled


def test_readonly_flag_is_kept_in_the_metadata_as_cinder_shows_it(cloud):
    headers = cloud.member.headers
    made = _create(cloud, size=1)["volume"]
    for flag, shown in ((True, "True"), ("false", "False")):
        cloud.app.post_json(f"{V}/volumes/{made['id']}/action", {"os-update_readonly_flag": {"readonly": flag}},
                            headers=headers, status=202)
        volume = cloud.app.get(f"{V}/volumes/{made['id']}", headers=headers).json["volume"]
        assert volume["metadata"]["readonly"] == shown
    refused = cloud.app.post_json(f"{V}/volumes/{made['id']}/action",
                                  {"os-update_readonly_flag": {"readonly": "maybe"}}, headers=headers,
                                  status=400).json
    assert "maybe" in refused["badRequest"]["message"]
