"""#23 finding 10: an offline app never reaches out. Every request a viewer's browser makes while
opening each page stays on the app's own host (the page icon once came from a public font host)."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

PAGES = ("", "explorer", "allocation_calculator", "scaling_runs", "tree_search", "engine")


@pytest.mark.browser
def test_no_page_makes_the_browser_fetch_from_another_host(app_url, browser):
    from tests.browser_helpers import wait_for_app

    own = urlparse(app_url).netloc
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    elsewhere: list[str] = []
    context.on("request", lambda r: elsewhere.append(r.url)
               if urlparse(r.url).scheme in ("http", "https", "ws", "wss") and urlparse(r.url).netloc != own else None)
    try:
        page = context.new_page()
        for name in PAGES:
            page.goto(f"{app_url}/{name}")
            wait_for_app(page)
            page.wait_for_timeout(1500)  # the favicon and late assets load after the first paint
        icon = page.evaluate("document.querySelector(\"link[rel*='icon']\")?.href || ''")
        assert icon and urlparse(icon).netloc in ("", own) or icon.startswith("data:"), icon
    finally:
        context.close()
    assert elsewhere == [], elsewhere
