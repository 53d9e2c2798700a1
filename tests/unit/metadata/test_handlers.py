"""The metadata handlers: OpenStack and EC2 formats, and who gets which instance's data.

The app is called as the server calls it (one app per listener, built with the
listener's networks; ``REMOTE_ADDR`` from the connection), with the real
database lookup on SQLite.
"""

from __future__ import annotations

import functools
import json

import pytest
import webtest

from fabric.metadata import facts
from fabric.metadata.app import MetadataApp
from tests.unit.metadata.guests import PUBKEY, add_guest, add_network

SCRIPT = b"#!/bin/sh\necho hello from user-data\n"


@pytest.fixture
def cloud(sqlite_db):
    """Two networks with the same CIDR; a guest at 10.30.0.5 on each; a third guest without extras."""
    add_network(sqlite_db, "net-a", segmentation_id=101, gateway="10.30.0.1")
    add_network(sqlite_db, "net-b", segmentation_id=102, project="proj-b", dhcp=False, gateway="10.30.0.1")
    ids = {
        "a": add_guest(sqlite_db, "net-a", "10.30.0.5", "02:00:00:00:0a:05", name="Web Server_1",
                       user_data=SCRIPT, key=("mykey", PUBKEY), floating="172.31.0.9", meta={"role": "web"},
                       launch_index=2),
        "b": add_guest(sqlite_db, "net-b", "10.30.0.5", "02:00:00:00:0b:05", name="other", project="proj-b"),
        "gone": add_guest(sqlite_db, "net-a", "10.30.0.7", "02:00:00:00:0a:07", name="gone", deleted=True),
    }
    return sqlite_db, ids


def client(db, network: str, address: str) -> webtest.TestApp:
    app = MetadataApp((network,), functools.partial(facts.find_instance, db), device="fabbtest")
    return webtest.TestApp(app, extra_environ={"REMOTE_ADDR": address})


def test_openstack_meta_data_has_every_key_of_the_format(cloud):
    db, ids = cloud
    guest = client(db, "net-a", "10.30.0.5")
    doc = guest.get("/openstack/latest/meta_data.json").json
    assert doc == {
        "uuid": ids["a"], "name": "Web Server_1", "hostname": "web-server-1", "project_id": "proj-a",
        "availability_zone": "nova", "launch_index": 2, "public_keys": {"mykey": PUBKEY},
        "keys": [{"name": "mykey", "type": "ssh", "data": PUBKEY}], "meta": {"role": "web"}, "devices": [],
    }
    # Dated versions serve the same document; the listing names them and latest.
    assert guest.get("/openstack/2013-10-17/meta_data.json").json == doc
    versions = guest.get("/openstack/").text.splitlines()
    assert "latest" in versions and "2012-08-10" in versions
    assert guest.get("/openstack/latest/").text.splitlines() == [
        "meta_data.json", "network_data.json", "vendor_data.json", "user_data"]
    # User data comes back decoded, byte for byte.
    resp = guest.get("/openstack/latest/user_data")
    assert resp.body == SCRIPT and resp.content_type == "application/octet-stream"


def test_network_data_describes_each_nic(cloud):
    db, _ = cloud
    a = client(db, "net-a", "10.30.0.5").get("/openstack/latest/network_data.json").json
    assert a["links"][0]["ethernet_mac_address"] == "02:00:00:00:0a:05" and a["links"][0]["mtu"] == 1450
    assert a["networks"] == [{"id": "network0", "link": a["links"][0]["id"], "network_id": "net-a",
                              "type": "ipv4_dhcp"}]
    b = client(db, "net-b", "10.30.0.5").get("/openstack/latest/network_data.json").json
    assert b["networks"][0] | {"link": None} == {
        "id": "network0", "link": None, "network_id": "net-b", "type": "ipv4", "ip_address": "10.30.0.5",
        "netmask": "255.255.255.0", "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.30.0.1"}]}


def test_ec2_meta_data_tree_and_user_data(cloud):
    db, ids = cloud
    guest = client(db, "net-a", "10.30.0.5")
    listing = guest.get("/latest/meta-data/").text.splitlines()
    assert {"instance-id", "hostname", "local-ipv4", "public-ipv4", "public-keys/", "placement/"} <= set(listing)
    assert guest.get("/latest/meta-data/instance-id").text == "i-" + ids["a"].replace("-", "")[:17]
    assert guest.get("/latest/meta-data/hostname").text == "web-server-1"
    assert guest.get("/latest/meta-data/local-ipv4").text == "10.30.0.5"
    assert guest.get("/latest/meta-data/public-ipv4").text == "172.31.0.9"
    assert guest.get("/latest/meta-data/placement/availability-zone").text == "nova"
    assert guest.get("/latest/meta-data/public-keys/").text == "0=mykey"
    assert guest.get("/latest/meta-data/public-keys/0/").text == "openssh-key"
    assert guest.get("/latest/meta-data/public-keys/0/openssh-key").text == PUBKEY
    assert guest.get("/2009-04-04/user-data").body == SCRIPT
    assert guest.get("/latest/").text.splitlines() == ["meta-data/", "user-data"]
    assert "latest" in guest.get("/").text.splitlines()


def test_what_an_instance_does_not_have_is_not_there(cloud):
    db, _ = cloud
    guest = client(db, "net-b", "10.30.0.5")  # no floating address, key or user data
    listing = guest.get("/latest/meta-data/").text.splitlines()
    assert "public-ipv4" not in listing and "public-keys/" not in listing
    guest.get("/latest/meta-data/public-ipv4", status=404)
    guest.get("/latest/meta-data/public-keys/0/openssh-key", status=404)
    guest.get("/latest/user-data", status=404)
    guest.get("/openstack/latest/user_data", status=404)
    assert "user_data" not in guest.get("/openstack/latest").text.splitlines()
    doc = guest.get("/openstack/latest/meta_data.json").json
    assert doc["public_keys"] == {} and doc["keys"] == []
    for path in ("/nope", "/openstack/1999-01-01/meta_data.json", "/latest/meta-data/local-ipv4/x",
                 "/openstack/latest/meta_data.json/x"):
        guest.get(path, status=404)


def test_the_network_the_request_arrived_on_decides_between_equal_addresses(cloud):
    db, ids = cloud
    assert client(db, "net-a", "10.30.0.5").get("/openstack/latest/meta_data.json").json["uuid"] == ids["a"]
    assert client(db, "net-b", "10.30.0.5").get("/openstack/latest/meta_data.json").json["uuid"] == ids["b"]


def test_unknown_or_deleted_requesters_get_404_and_nothing_else(cloud):
    db, _ = cloud
    for network, address in (("net-a", "10.30.0.99"), ("net-a", "10.30.0.7"), ("net-c", "10.30.0.5"),
                             ("net-a", "not-an-address")):
        resp = client(db, network, address).get("/openstack/latest/meta_data.json", status=404)
        assert resp.content_type == "text/plain" and b"{" not in resp.body


@pytest.mark.parametrize("header", ["X-Instance-ID", "X-Forwarded-For", "X-Tenant-ID", "X-Real-IP",
                                    "X-Instance-ID-Signature", "Forwarded"])
def test_identity_headers_are_refused_whoever_sends_them(cloud, header):
    db, ids = cloud
    # A known guest naming the other instance, and a stranger naming a known one: 403, no data.
    for network, address in (("net-b", "10.30.0.5"), ("net-a", "10.30.0.99")):
        value = ids["a"] if "Instance" in header else "10.30.0.5"
        resp = client(db, network, address).get("/openstack/latest/meta_data.json", headers={header: value},
                                                status=403)
        assert header.lower() in resp.text.lower() and ids["a"] not in resp.text and b"{" not in resp.body


def test_only_reads_are_served_and_head_has_no_body(cloud):
    db, _ = cloud
    guest = client(db, "net-a", "10.30.0.5")
    guest.post("/openstack/latest/meta_data.json", "x", status=405)
    resp = guest.head("/latest/meta-data/local-ipv4")
    assert resp.status_int == 200 and resp.body == b"" and resp.headers["Content-Length"] == "9"


def test_a_failing_database_is_503_not_a_crash(cloud):
    def broken(network_ids, address):
        raise RuntimeError("database went away")

    app = webtest.TestApp(MetadataApp(("net-a",), broken), extra_environ={"REMOTE_ADDR": "10.30.0.5"})
    assert "try again" in app.get("/latest/meta-data/", status=503).text


def test_hostnames_are_dns_labels():
    assert facts.hostname_of("Web Server_1", "abc") == "web-server-1"
    assert facts.hostname_of("???", "0123456789") == "server-01234567"
    assert len(facts.hostname_of("x" * 100, "u")) == 63
    assert facts.decode_user_data("not base64!") is None
    assert json.loads(json.dumps(facts.decode_user_data("aGk=").decode())) == "hi"
