"""The admin in a real browser (Debian's Chromium, driven by Playwright) against a real local cluster: what an
operator sees, updated live, without reloading the page.

Screenshots of each screen go to $APPSUP_SCREENSHOTS (docs/screenshots/ when refreshing the documentation), or to
the test's temporary directory.
"""

import os
import shutil
import signal
from pathlib import Path

import pytest

from .local_cluster import TIMEOUT, Cluster
from .processes import manage, web_process

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = os.environ.get("APPSUP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
OPERATOR, OPERATOR_PASSWORD = "operator", "operator-password-1"
APP_ADMIN, APP_ADMIN_PASSWORD = "boss", "correct-horse-battery"
LIVE = 1_000  # ms: the admin shows a change within a second
SETTLE = 60_000  # ms: a start, which migrates a new database


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed: `apt-get install chromium` (or set APPSUP_CHROMIUM to its path)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is installed by bin/test")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def cluster(tmp_path, redis_url, own_databases):
    sample = {"APP_HOSTED_APPS": "samples.notes", "APP_HOSTED_URLCONF": "samples.notes.urls"}  # as bin/cluster
    c = Cluster(tmp_path, redis_url, worker_web=True, worker_overrides={"env_a": sample, "env_b": sample})
    try:
        c.start()
        manage(["ensureadmin", "--username", OPERATOR, "--password", OPERATOR_PASSWORD], c.supervisor_env)
        yield c
    finally:
        c.stop()


@pytest.fixture
def shots(tmp_path):
    where = Path(os.environ.get("APPSUP_SCREENSHOTS") or tmp_path / "screenshots")
    where.mkdir(parents=True, exist_ok=True)

    def shot(page, name):
        page.screenshot(path=str(where / f"{name}.png"), full_page=True)

    return shot


@pytest.fixture
def page(browser, cluster):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=cluster.base)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # The supervisor's Content-Security-Policy must let the admin and its live updates run (and block nothing).
    page.on("console", lambda message: errors.append(message.text) if "Content Security Policy" in message.text
            else None)
    yield page
    context.close()
    assert not errors, f"the admin's script failed, or the Content-Security-Policy blocked something: {errors}"


def log_in(page):
    page.goto("/admin/login/")
    page.fill("#id_username", OPERATOR)
    page.fill("#id_password", OPERATOR_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")


def live(page):
    """Wait for the page's events socket to be connected."""
    page.wait_for_selector("#live-status[data-state=live]", timeout=10_000)


def test_an_operator_creates_starts_watches_and_opens_an_app_without_reloading(page, cluster, shots):
    log_in(page)

    # Both environments online, as the Environments list shows them.
    page.goto("/admin/environments/environment/")
    live(page)
    for env in ("env_a", "env_b"):
        page.wait_for_selector(f"[data-live-environment={env}][data-status=online]", timeout=10_000)
    shots(page, "02-environments")

    # An application on both environments, env_a first.
    page.goto("/admin/apps/application/add/")
    page.fill("#id_name", "crm")
    page.fill("#id_display_name", "CRM")
    page.select_option("#id_environments_0", "env_a")
    page.select_option("#id_environments_1", "env_b")
    page.fill("#id_admin_username", APP_ADMIN)
    page.fill("#id_admin_password", APP_ADMIN_PASSWORD)
    shots(page, "03-add-application")
    page.click("input[name=_save]")
    page.wait_for_url("**/admin/apps/application/")

    # Started from the list, in a second tab, while the first one watches: its badges turn green without a reload.
    watcher = page
    live(watcher)
    for env in ("env_a", "env_b"):
        assert watcher.locator(f"[data-live-placement='crm:{env}']").get_attribute("data-state") != "running"
    actor = page.context.new_page()
    actor.goto("/admin/apps/application/")
    actor.check("input[name=_selected_action][value]")
    actor.select_option("select[name=action]", "start")
    actor.click("button[name=index]")
    if actor.locator("input[name=post]").count():  # the confirmation page
        shots(actor, "04-confirm-start")
        actor.click("input[type=submit]")
    for env in ("env_a", "env_b"):
        watcher.wait_for_selector(f"[data-live-placement='crm:{env}'][data-state=running]", timeout=SETTLE)
    # ...and the rest of the row follows within a second: nothing left that needs attention.
    watcher.wait_for_function(
        "() => document.querySelector('[data-live-fragment=\"attention:crm\"]').textContent.includes('in sync')",
        timeout=LIVE * 3)
    shots(watcher, "05-applications-running")
    actor.close()

    # An agent killed: its environment turns offline on the open page, and comes back when the agent does.
    page.goto("/admin/environments/environment/")
    live(page)
    cluster.agents["env_b"].signal(signal.SIGKILL)
    page.wait_for_selector("[data-live-environment=env_b][data-status=offline]", timeout=(TIMEOUT + 5) * 1000)
    shots(page, "06-environment-offline")
    cluster.start_agent("env_b")
    page.wait_for_selector("[data-live-environment=env_b][data-status=online]", timeout=30_000)

    # env_a's web process gone: its agent calls env_a degraded and the proxy refuses crm there, so the open list
    # says degraded, not a green running, with nothing to open; and running again once the web is back.
    page.goto("/admin/apps/application/")
    live(page)
    cluster.webs["env_a"].signal(signal.SIGKILL)
    page.wait_for_selector("[data-live-placement='crm:env_a'] .appsup-badge-degraded", timeout=30_000)
    assert page.locator("a[data-open='crm:env_a']").first.is_hidden()
    assert page.locator("a[data-open='crm:env_b']").first.is_visible()
    shots(page, "06b-environment-degraded")
    cluster.webs["env_a"] = cluster._track(web_process(
        cluster.worker_envs["env_a"], cluster.worker_ports["env_a"], cluster.tmp / "env_a-web-2.log"))
    page.wait_for_selector("[data-live-placement='crm:env_a'] .appsup-badge-running", timeout=30_000)
    assert page.locator("a[data-open='crm:env_a']").first.is_visible()

    # The hosted application, opened through the "Open" link, with its own admin account.
    page.goto("/admin/apps/application/")
    with page.context.expect_page() as opened:
        page.click("a[data-open='crm:env_a']")
    app = opened.value
    app.wait_for_load_state()
    app.fill("#id_username", APP_ADMIN)
    app.fill("#id_password", APP_ADMIN_PASSWORD)
    app.click("input[type=submit]")
    app.wait_for_url("**/apps/crm/")  # the operator's own application, hosted beside its admin
    app.goto("/apps/crm/new/")
    app.fill("#id_title", "Call ACME")
    app.fill("#id_body", "About the renewal.")
    app.click("form.note button[type=submit]")
    app.wait_for_selector("text=Call ACME")
    shots(app, "07-hosted-application")
    app.goto("/apps/crm/admin/")
    assert "Site administration" in app.content()
    shots(app, "08-hosted-admin")

    # Its requests on its Logs page, a new one arriving while the page is open (the live tail, over /ws/events/).
    page.goto("/admin/apps/application/")
    page.click("#result_list a:text-is('crm')")
    page.click("a.appsup-logs-link")
    page.wait_for_selector("#appsup-logs td:text-is('/new/')")
    page.check("#appsup-logs-live")
    app.goto("/apps/crm/no-such-page/")
    page.wait_for_selector("#appsup-logs td:text-is('/no-such-page/')", timeout=10_000)
    shots(page, "09-application-logs")

    # A backup, then a restore confirmed in a second tab while the first watches the Backups page: the restore
    # shows up there, done, without a reload (each of its steps is an event).
    page.goto("/admin/apps/application/")
    page.click("#result_list a:text-is('crm')")
    page.goto(page.url.replace("/change/", "/backups/"))
    page.click("input[value='Back up now']")
    page.wait_for_selector("#backups td:text-is('manual')")
    live(page)
    assert page.locator("[data-restore]").count() == 0
    actor = page.context.new_page()
    actor.goto(page.url)
    actor.click("#backups a:text-is('Restore…')")
    actor.click("input[type=submit]")
    page.wait_for_selector("[data-restore][data-state=done]", timeout=SETTLE)
    page.wait_for_selector("#backups td:text-is('safety')", timeout=SETTLE)
    shots(page, "10-backups-restored")
    actor.close()

    # The overview, now that there is something to show.
    page.goto("/admin/")
    live(page)
    shots(page, "01-index")
