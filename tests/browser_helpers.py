"""Helpers for browser tests (import from tests: `from tests.browser_helpers import wait_for_app`)."""


def wait_for_app(page) -> None:
    """Wait until Streamlit has finished the current run (no 'Running...' status widget)."""
    page.wait_for_selector("[data-testid='stApp']")
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')",
        timeout=120_000,
    )
    page.wait_for_timeout(300)
