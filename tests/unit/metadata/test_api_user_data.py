"""``server create --user-data FILE --key-name KEY``: what the API keeps for the metadata service."""

from __future__ import annotations

import base64

import sqlalchemy as sa

from fabric.db.models import Instance
from tests.unit.api.test_compute import PUBKEY, C, boot, make_flavor, make_image

SCRIPT = b"#!/bin/sh\necho \xc3\xa9t\xc3\xa9 from user-data\n"


def test_user_data_and_the_keys_public_half_are_stored_per_server(api):
    member = api.make_member()
    flavor, image = make_flavor(api), make_image(api, member.project_id)
    api.app.post_json(f"{C}/os-keypairs", {"keypair": {"name": "mine", "public_key": PUBKEY}},
                      headers=member.headers)
    encoded = base64.b64encode(SCRIPT).decode()
    server_id = boot(api, member, flavor, image, key_name="mine", user_data=encoded,
                     min_count=2, max_count=2).json["server"]["id"]
    # The keypair may go: a server keeps the key it was created with.
    api.app.delete(f"{C}/os-keypairs/mine", headers=member.headers, status=202)
    with api.db.begin() as session:
        rows = sorted(session.scalars(sa.select(Instance)), key=lambda r: r.launch_index)
        assert [r.launch_index for r in rows] == [0, 1] and server_id in {r.id for r in rows}
        for row in rows:
            assert base64.b64decode(row.user_data) == SCRIPT
            assert (row.key_name, row.key_data) == ("mine", PUBKEY)


def test_a_server_without_user_data_or_key_has_neither(api):
    member = api.make_member()
    server_id = boot(api, member, make_flavor(api), make_image(api, member.project_id)).json["server"]["id"]
    with api.db.begin() as session:
        row = session.get(Instance, server_id)
        assert (row.user_data, row.key_name, row.key_data, row.launch_index) == (None, None, None, 0)


def test_bad_user_data_is_400_naming_it_and_nothing_is_written(api):
    member = api.make_member()
    flavor, image = make_flavor(api), make_image(api, member.project_id)
    resp = boot(api, member, flavor, image, status=400, user_data="#!/bin/sh not base64")
    assert "server.user_data '#!/bin/sh not base64' is not base64" in resp.json["badRequest"]["message"]
    resp = boot(api, member, flavor, image, status=400, user_data="A" * 65536)
    assert "user_data" in resp.json["badRequest"]["message"]
    resp = boot(api, member, flavor, image, status=400, user_data=12)
    assert "user_data" in resp.json["badRequest"]["message"]
    assert api.recorder.named("build_instances") == []
    with api.db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Instance)) == 0
