"""Identity's OS-EC2 credentials API (what `openstack ec2 credentials` calls), on the in-process app."""

from __future__ import annotations

from fabric.objectstore import metadata


def _url(user_id: str, access: str = "") -> str:
    return f"/v3/users/{user_id}/credentials/OS-EC2" + (f"/{access}" if access else "")


def test_a_member_creates_lists_shows_and_deletes_their_keys(api):
    member = api.make_member()
    created = api.app.post_json(_url(member.user_id), {"tenant_id": member.project_id}, headers=member.headers,
                                status=201).json["credential"]
    assert (created["user_id"], created["tenant_id"], created["trust_id"]) == (member.user_id, member.project_id,
                                                                               None)
    assert len(created["access"]) == 32 and len(created["secret"]) == 40
    listed = api.app.get(_url(member.user_id), headers=member.headers).json["credentials"]
    assert [c["access"] for c in listed] == [created["access"]]
    shown = api.app.get(_url(member.user_id, created["access"]), headers=member.headers).json["credential"]
    assert shown["secret"] == created["secret"]
    # What the objectstore's signature check reads.
    principal = metadata.principal(api.db, created["access"])
    assert (principal.secret, principal.user_id, principal.project_id) == (created["secret"], member.user_id,
                                                                           member.project_id)
    api.app.delete(_url(member.user_id, created["access"]), headers=member.headers, status=204)
    assert api.app.get(_url(member.user_id), headers=member.headers).json["credentials"] == []
    assert metadata.principal(api.db, created["access"]) is None
    api.app.get(_url(member.user_id, created["access"]), headers=member.headers, status=404)


def test_keys_need_a_role_on_the_project_and_belong_to_their_user(api):
    member, stranger = api.make_member(), api.make_member()
    refused = api.app.post_json(_url(member.user_id), {"tenant_id": stranger.project_id}, headers=member.headers,
                                status=403)
    assert f"has no role on project {stranger.project_id}" in refused.json["error"]["message"]
    api.app.post_json(_url(stranger.user_id), {"tenant_id": stranger.project_id}, headers=member.headers,
                      status=403)
    api.app.post_json(_url(member.user_id), {}, headers=member.headers, status=400)
    api.app.post_json(_url(member.user_id), {"tenant_id": "nope"}, headers=member.headers, status=404)
    created = api.app.post_json(_url(member.user_id), {"tenant_id": member.project_id},
                                headers=member.headers).json["credential"]
    api.app.get(_url(stranger.user_id, created["access"]), headers=stranger.headers, status=404)
    api.app.delete(_url(stranger.user_id, created["access"]), headers=stranger.headers, status=404)
    # An admin manages anyone's.
    admin = {"X-Auth-Token": api.admin.token}
    assert [c["access"] for c in api.app.get(_url(member.user_id), headers=admin).json["credentials"]] == \
        [created["access"]]
