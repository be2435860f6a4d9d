"""The supervisor's pages (supervisor_project.pages.SupervisorPagesMiddleware): a Content-Security-Policy and
X-Frame-Options: DENY; cookies host-only, HttpOnly, SameSite=Lax, and Secure when the request came over TLS."""

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("secure", [False, True])
def test_the_supervisors_cookies_are_host_only_httponly_lax_and_secure_over_tls(client, admin_user, secure):
    page = client.get("/admin/login/", secure=secure)
    csp = page["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-eval" not in csp and "script-src 'self' 'unsafe-inline'" not in csp
    assert page["X-Frame-Options"] == "DENY"
    logged_in = client.post("/admin/login/?next=/admin/", {
        "username": "admin", "password": "password",
        "csrfmiddlewaretoken": page.cookies["csrftoken"].value}, secure=secure)
    for name in ("sessionid", "csrftoken"):
        morsel = logged_in.cookies.get(name) or page.cookies[name]
        assert morsel["httponly"] and morsel["samesite"] == "Lax" and not morsel["domain"]
        assert bool(morsel["secure"]) is secure
