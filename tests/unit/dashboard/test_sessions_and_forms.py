"""Sessions, cookies, CSRF, expiry and escaping, through the dashboard app in front of a
real API served over HTTP (see conftest)."""

from __future__ import annotations

import pytest
import webtest

from fabric.dashboard import sessions
from fabric.dashboard.app import build_app
from fabric.dashboard.web import safe_next
from tests.unit.dashboard.conftest import csrf_of, login


def cookie_header(response: webtest.TestResponse) -> str:
    [header] = [v for k, v in response.headerlist if k.lower() == "set-cookie"]
    return header


def test_login_sets_an_httponly_samesite_cookie_scoped_to_the_dashboard(dashboard):
    response = login(dashboard)
    assert response.status_int == 303 and response.location.endswith("/dashboard/overview")
    cookie = cookie_header(response)
    assert cookie.startswith(f"{sessions.COOKIE}=")
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "path=/dashboard", "samesite=lax"} <= flags
    assert "secure" not in flags


def test_secure_cookies_when_configured(live_api):
    app = webtest.TestApp(build_app(live_api.identity_url, secure_cookies=True))
    page = app.get("/dashboard/login", extra_environ={"wsgi.url_scheme": "https"})
    assert "secure" in {p.strip().lower() for p in cookie_header(page).split(";")}


def test_login_starts_a_new_session_so_a_planted_id_is_worthless(dashboard):
    dashboard.get("/dashboard/login")
    before = dashboard.cookies[sessions.COOKIE]
    login(dashboard)
    after = dashboard.cookies[sessions.COOKIE]
    assert after != before
    stranger = webtest.TestApp(dashboard.app)
    stranger.set_cookie(sessions.COOKIE, before)
    assert stranger.get("/dashboard/overview").status_int == 303  # the old id is not logged in


def test_the_token_never_reaches_the_browser(dashboard):
    login(dashboard)
    [current] = [s for s in dashboard.app.dashboard.store._sessions.values() if s.logged_in]
    page = dashboard.get("/dashboard/overview")
    assert current.token not in page.text
    assert current.token not in str(dashboard.cookies)


@pytest.mark.parametrize("how", ["missing", "wrong", "other-origin"])
def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(dashboard, live_api, how):
    login(dashboard)
    token = csrf_of(dashboard)
    fields = {"name": f"forged-{how}"}
    headers = {}
    if how == "wrong":
        fields["csrf_token"] = token[:-2] + "xx"
    if how == "other-origin":
        fields["csrf_token"] = token
        headers["Origin"] = "http://evil.example"
    refused = dashboard.post("/dashboard/networks", fields, headers=headers, status=403)
    assert "CSRF token" in refused.text
    listed = live_api.app.get("/networking/v2.0/networks", headers=live_api.admin.headers).json["networks"]
    assert f"forged-{how}" not in {n["name"] for n in listed}
    # The same form with its token works: the refusal was about the token alone.
    dashboard.post("/dashboard/networks", {"name": "made", "csrf_token": token}, status=303)
    listed = live_api.app.get("/networking/v2.0/networks", headers=live_api.admin.headers).json["networks"]
    assert "made" in {n["name"] for n in listed}


def test_the_login_form_needs_its_csrf_token_too(dashboard):
    dashboard.get("/dashboard/login")
    refused = dashboard.post("/dashboard/login", {"user": "admin", "password": "s3cret-admin", "project": "admin"},
                             status=403)
    assert "CSRF" in refused.text


def test_expiry_sends_the_user_to_login_and_then_back_to_the_page(dashboard, live_api):
    login(dashboard)
    [current] = [s for s in dashboard.app.dashboard.store._sessions.values() if s.logged_in]
    # The API stops honouring the token (as when it expires).
    live_api.app.delete("/v3/auth/tokens", headers={**live_api.admin.headers, "X-Subject-Token": current.token})
    bounced = dashboard.get("/dashboard/networks", status=303)
    assert bounced.location.endswith("/dashboard/login?next=/dashboard/networks")
    login_page = bounced.follow()
    assert "Your session has expired" in login_page.text
    form = login_page.forms[0]
    form["user"], form["password"], form["project"] = "admin", "s3cret-admin", "admin"
    back = form.submit(status=303)
    assert back.location.endswith("/dashboard/networks")
    assert back.follow().status_int == 200


def test_a_poll_after_expiry_answers_401_with_the_way_to_log_in(dashboard, live_api):
    login(dashboard)
    [current] = [s for s in dashboard.app.dashboard.store._sessions.values() if s.logged_in]
    live_api.app.delete("/v3/auth/tokens", headers={**live_api.admin.headers, "X-Subject-Token": current.token})
    current.cache.clear()
    answer = dashboard.get("/dashboard/servers/status.json", status=401)
    assert answer.json["login"].startswith("/dashboard/login?next=")


def test_logout_revokes_the_token_at_the_api(dashboard, live_api):
    login(dashboard)
    [current] = [s for s in dashboard.app.dashboard.store._sessions.values() if s.logged_in]
    token = current.token
    dashboard.post("/dashboard/logout", {"csrf_token": csrf_of(dashboard)}, status=303)
    live_api.app.get("/v3/auth/tokens", headers={**live_api.admin.headers, "X-Subject-Token": token}, status=404)
    assert dashboard.get("/dashboard/overview").status_int == 303


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/elsewhere", "/dashboard\\..\\x",
                                    None, ""])
def test_after_login_only_pages_of_the_dashboard(target):
    assert safe_next(target) == "/dashboard/overview"


def test_names_from_the_api_are_escaped(dashboard, live_api):
    name = "<script>alert(1)</script>"
    live_api.app.post_json("/networking/v2.0/networks", {"network": {"name": name}}, headers=live_api.admin.headers)
    login(dashboard)
    page = dashboard.get("/dashboard/networks")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<script>alert" not in page.text


def test_server_rows_are_escaped_in_the_live_update_too(dashboard, live_api):
    templates = dashboard.app.dashboard.templates
    html = templates.get_template("_server_rows.html").render(prefix="/dashboard", rows=[{
        "id": "x\" onmouseover=\"alert(1)", "name": "<img src=x onerror=alert(1)>", "status": "ACTIVE",
        "task": None, "addresses": "<b>", "flavor": "&", "image": "", "created": ""}])
    assert "<img" not in html and "<b>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert 'x&#34; onmouseover=&#34;alert(1)' in html


def test_api_errors_are_readable_messages_not_tracebacks(dashboard):
    login(dashboard)
    token = csrf_of(dashboard)
    page = dashboard.post("/dashboard/servers/launch", {"csrf_token": token, "name": "vm", "flavor": "nosuch",
                                                        "image": "nosuch", "count": "1"}, status=404)
    assert "nosuch" in page.html.find(role="alert").text
    assert "Traceback" not in page.text
    bad_count = dashboard.post("/dashboard/servers/launch", {"csrf_token": token, "name": "vm", "flavor": "1",
                                                             "image": "x", "count": "many"}, status=400)
    assert "Count 'many' is not a number" in bad_count.html.find(role="alert").text


def test_operator_pages_need_the_admin_role(dashboard, live_api):
    live_api.make_member("tenant-a")
    login(dashboard)  # admin: allowed
    assert dashboard.get("/dashboard/admin/services").status_int == 200
    member_app = webtest.TestApp(dashboard.app)
    with live_api.db.begin() as session:
        from fabric.db.models import User  # the test may look into the database; the dashboard may not

        name = session.query(User).filter(User.name.like("user-%")).first().name
    login(member_app, user=name, password="pw", project="tenant-a")
    refused = member_app.get("/dashboard/admin/services", status=403)
    assert "operators" in refused.text
    assert "Operator" not in member_app.get("/dashboard/overview").text
