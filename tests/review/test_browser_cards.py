"""What a reviewer needs on the card, seen in Debian's chromium (Playwright) against a real
`flywheel review serve`: the router's evidence and the nearest training neighbours, a feedback
signal's text, the enlarged image at its real size, undo with the keyboard, an unknown queue's
404, and the audit page for admins. With FLYWHEEL_SCREENSHOTS=1 it refreshes the committed
screenshots docs/screenshots/card.png and audit.png (a test run never dirties the tree)."""

from __future__ import annotations

import os
import shutil

import pytest

from flywheel.loop import queue as q

from .conftest import add_users, make_pool, queue_routed, review_server
from .test_browser import ROOT, _login, _shrink, browser  # noqa: F401 - `browser` is a fixture

pytestmark = pytest.mark.browser
SHOTS = ROOT / "docs" / "screenshots"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not shutil.which("chromium"):
        msg = "Debian's chromium is not installed (make setup installs it; or apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    from flywheel.catalog import Catalog

    home = tmp_path_factory.mktemp("cards-home")
    env = {**os.environ, "FLYWHEEL_HOME": str(home), "FLYWHEEL_ARGON2_PROFILE": "test"}
    old = os.environ.get("FLYWHEEL_ARGON2_PROFILE")
    os.environ["FLYWHEEL_ARGON2_PROFILE"] = "test"
    cat = Catalog(home / "catalog.db")
    add_users(cat)
    ref, rows = make_pool(cat, home, n=4)
    ids = queue_routed(cat, ref, rows)
    cat.audit("x" * 200_000, "login.fail", "user:" + "x" * 200_000, {"client": "203.0.113.9", "name_length": 200_000})
    with review_server(env) as url:
        yield {"url": url, "cat": cat, "ids": ids}
    if old is None:
        os.environ.pop("FLYWHEEL_ARGON2_PROFILE", None)


def _shot(name: str, tmp_path):
    if os.environ.get("FLYWHEEL_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        return SHOTS / name
    return tmp_path / name


def test_card_evidence_real_size_and_undo(browser, server, tmp_path):  # noqa: F811 - `browser` is the imported fixture
    cat, ids = server["cat"], server["ids"]
    page = _login(browser, server, "ann", "/queue/kites")
    card = f"#item-{ids[0]}"
    page.wait_for_selector(f"{card}.focus")
    text = page.inner_text(card)
    for part in ("failed: color", "2.10x the reserve pool's 3-NN radius", "retrieval similarity 0.734",
                 "a blue kite on a beach", "0.612", "train/kites/0041.jpg", "Feedback (rating 1/5):",
                 "the kite came out orange and there are two of them", "320 × 240 px", "text, knowledge, structured"):
        assert part in text, (part, text)
    assert "none recorded" not in text
    # enlarged: the image at its real size, and the page says so
    page.click(f"{card} a.enlarge")
    page.wait_for_selector(f"{card}.enlarged")
    page.wait_for_function(f"() => document.querySelector('{card} .thumb .shown').textContent.includes('real size')")
    assert page.evaluate(f"document.querySelector('{card} .thumb img').naturalWidth") == 320
    assert page.evaluate(f"document.querySelector('{card} .thumb img').getBoundingClientRect().width") == 320
    assert "shown at 320 × 240 px (real size)" in page.inner_text(f"{card} .thumb")
    page.click(f"{card} a.enlarge")  # and back
    page.wait_for_selector(f"{card}:not(.enlarged)")
    shot = _shot("card.png", tmp_path)
    page.locator(card).screenshot(path=str(shot))
    _shrink(shot)
    assert shot.stat().st_size > 5_000
    # approve with the keyboard, then take it back with u: pending again, audited as an undo
    page.focus(card)
    page.keyboard.press("a")
    page.wait_for_selector(f"{card}.done.approved")
    assert q.get_item(cat, ids[0])["status"] == "approved"
    page.wait_for_selector(f"{card} form.undo:not([hidden])")
    page.click(f"{card}")
    page.keyboard.press("u")
    page.wait_for_selector(f"{card}:not(.done)")
    assert "undone: pending again" in page.inner_text(f"{card} .result")
    assert q.get_item(cat, ids[0])["status"] == "pending"
    assert [r["actor"] for r in cat.execute("SELECT actor FROM audit_log WHERE action = 'review.undo'")] == ["ann"]
    page.keyboard.press("r")  # decided again from the same page (its version was updated)
    page.wait_for_selector(f"{card}.done.rejected")
    assert q.get_item(cat, ids[0])["status"] == "rejected"
    # an unknown queue is a 404 page, not "0 pending"
    r = page.goto(server["url"] + "/queue/kitez")
    assert r.status == 404 and "there is no queue" in page.inner_text("main")
    r = page.goto(server["url"] + "/audit")
    assert r.status == 403
    page.context.close()


def test_audit_page_for_admins(browser, server, tmp_path):  # noqa: F811
    page = _login(browser, server, "root", "/audit")
    page.wait_for_selector("#audit tbody tr")
    text = page.inner_text("#audit")
    assert "(200,000 characters)" in text and "client:\n203.0.113.9" in text
    assert "review.enqueue" in text and '{"' not in text
    # long values are cut: the table fits the window instead of running off to the right
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    shot = _shot("audit.png", tmp_path)
    page.screenshot(path=str(shot), full_page=False)
    _shrink(shot)
    assert shot.stat().st_size > 5_000
    page.context.close()
