"""The dashboard in Debian's chromium (Playwright) against a real `flywheel review serve` on
127.0.0.1: login, review with keyboard shortcuts, a conflict between two reviewers, a bulk
decision and the audit page. One server and one browser for the module."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from flywheel.loop import queue as q

from .conftest import PASSWORDS, add_users, make_pool, queue_pool, review_server

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[2]
# The committed screenshot is refreshed only on request (FLYWHEEL_SCREENSHOTS=1), so a test run
# never dirties the working tree.
SCREENSHOT = ROOT / "docs" / "screenshots" / "queue.png"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not shutil.which("chromium"):
        msg = "Debian's chromium is not installed (make setup installs it; or apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(msg)  # in CI a missing browser is a broken set-up, not a reason to skip
        pytest.skip(msg)
    from flywheel.catalog import Catalog

    home = tmp_path_factory.mktemp("review-home")
    env = {**os.environ, "FLYWHEEL_HOME": str(home), "FLYWHEEL_ARGON2_PROFILE": "test"}
    old = os.environ.get("FLYWHEEL_ARGON2_PROFILE")
    os.environ["FLYWHEEL_ARGON2_PROFILE"] = "test"
    cat = Catalog(home / "catalog.db")
    add_users(cat)
    ref, rows = make_pool(cat, home, n=8)
    ids = queue_pool(cat, ref, rows[:5])
    bulk_ids = queue_pool(cat, ref, rows[5:], signal="sig-bulk", queue="pretrain")
    with review_server(env) as url:
        yield {"url": url, "cat": cat, "ids": ids, "bulk_ids": bulk_ids}
    if old is None:
        os.environ.pop("FLYWHEEL_ARGON2_PROFILE", None)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium"),
                              args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


def _login(browser, server, user, path="/queue"):
    ctx = browser.new_context(viewport={"width": 1100, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(20_000)
    page.goto(server["url"] + path)
    assert "/login" in page.url
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORDS[user])
    page.click("form.login button[type=submit]")
    page.wait_for_url(server["url"] + path)
    return page


def test_login_and_review_with_keyboard(browser, server, tmp_path):
    cat, ids = server["cat"], server["ids"]
    page = _login(browser, server, "ann")
    page.click("text=sig-red-bicycle >> xpath=../td/a")
    page.wait_for_selector("article.card.focus")
    assert page.evaluate("window.__pwned") is None  # the hostile captions stayed text
    assert "<script>window.__pwned" in page.inner_text(f"#item-{ids[0]} dl.captions")
    page.keyboard.press("a")
    page.wait_for_selector(f"#item-{ids[0]}.done.approved")
    page.keyboard.press("3")  # third reject reason
    page.keyboard.press("r")
    page.wait_for_selector(f"#item-{ids[1]}.done.rejected")
    first, second = q.get_item(cat, ids[0]), q.get_item(cat, ids[1])
    assert (first["status"], first["decided_by"]) == ("approved", "ann")
    assert (second["status"], second["reason"]) == ("rejected", q.REASONS["rejected"][2])
    assert page.inner_text("#pending-count") == "3"
    # thumbnails came from the cache (resized from the dataset's image bytes)
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_function("() => Array.from(document.querySelectorAll('.thumb img')).slice(0, 3).every(i => i.complete && i.naturalWidth > 0)")
    assert page.evaluate(f"document.querySelector('#item-{ids[0]} .thumb img').naturalWidth") == 256
    # the screenshot for the closing note: decided cards, the focused next one, the rest
    shot = SCREENSHOT if os.environ.get("FLYWHEEL_SCREENSHOTS") == "1" else tmp_path / "queue.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=False)
    _shrink(shot)
    assert shot.stat().st_size > 10_000
    page.context.close()


def test_second_reviewer_sees_who_decided(browser, server):
    cat, ids = server["cat"], server["ids"]
    page = _login(browser, server, "bob", "/queue/pretrain?signal=sig-red-bicycle")
    target = ids[2]
    page.wait_for_selector(f"#item-{target}")
    q.decide(cat, target, "approved", "ann", reason="relevant")  # ann wins while bob looks at the page
    page.click(f"#item-{target} button.reject")
    page.wait_for_selector(f"#item-{target}.conflict")
    assert "already approved by ann" in page.inner_text(f"#item-{target} .result")
    assert q.get_item(cat, target)["decided_by"] == "ann"
    page.context.close()


def test_bulk_decision(browser, server):
    cat, bulk_ids = server["cat"], server["bulk_ids"]
    page = _login(browser, server, "ann", "/queue/pretrain?signal=sig-bulk")
    assert page.locator("article.card").count() == len(bulk_ids)
    page.select_option("form.bulk select[name=decision]", "rejected")
    page.select_option("form.bulk select[name=reason]", "off_concept")
    page.check("form.bulk input[name=confirm]")
    page.click("form.bulk button[type=submit]")
    page.wait_for_selector("text=Applied to")
    assert f"Applied to {len(bulk_ids)} items" in page.inner_text("main")
    assert {q.get_item(cat, i)["status"] for i in bulk_ids} == {"rejected"}
    assert {q.get_item(cat, i)["reason"] for i in bulk_ids} == {"off_concept"}
    page.context.close()


def test_audit_page_and_csv(browser, server, tmp_path):
    page = _login(browser, server, "root", "/audit")
    page.fill("input[name=action]", "review.")
    page.click("form.filters button[type=submit]")
    page.wait_for_selector("#audit tbody tr")
    text = page.inner_text("#audit")
    assert "review.approve" in text and "review.reject" in text and "ann" in text
    with page.expect_download() as dl:
        page.click("#csv")
    path = tmp_path / "audit.csv"
    dl.value.save_as(path)
    lines = path.read_text().splitlines()
    decided = q.count_items(server["cat"], status=None) - q.count_items(server["cat"])
    assert lines[0].startswith("seq,at_utc,actor,action") and sum(",review.approve," in x or ",review.reject," in x for x in lines) == decided
    page.context.close()


def _shrink(path: Path) -> None:
    """Keep the committed screenshot small: 128-colour palette PNG."""
    from PIL import Image

    with Image.open(path) as im:
        im.convert("RGB").quantize(colors=128).save(path, optimize=True)
