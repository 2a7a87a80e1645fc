"""Helpers for browser tests (import from tests: `from tests.browser_helpers import wait_for_app`).

Streamlit marks its app root with the script's state (``data-test-script-state``: ``running``,
``notRunning``, ...); its "Running..." status is an icon without text, shown only after 500 ms, so
the page's text cannot say whether a run is under way.
"""

IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
# Installs (once per document) a counter of finished script runs and returns it. Each mutation
# record holds the value before its change; the value after it is the next record's old value.
_FINISHED_RUNS = """() => {
    if (window.__finishedRuns === undefined) {
        window.__finishedRuns = 0;
        new MutationObserver(records => records.forEach((record, i) => {
            const after = i + 1 < records.length ? records[i + 1].oldValue
                                                 : record.target.getAttribute('data-test-script-state');
            if (record.oldValue !== 'notRunning' && after === 'notRunning') window.__finishedRuns++;
        })).observe(document.documentElement, {subtree: true, attributes: true, attributeOldValue: true,
                                               attributeFilter: ['data-test-script-state']});
    }
    return window.__finishedRuns;
}"""


def wait_for_app(page) -> None:
    """Wait until Streamlit has finished the current run (a run that a widget change has asked
    for but the server not yet started is not waited for: use ``rerun_after``)."""
    page.wait_for_selector(IDLE, timeout=120_000)
    page.wait_for_timeout(300)  # charts draw after their element arrives


def rerun_after(page, action) -> None:
    """Do ``action`` (change a widget) and wait until the run it causes has finished: under load
    the server can take longer to start that run than any fixed pause."""
    finished = page.evaluate(_FINISHED_RUNS)
    action()
    page.wait_for_function(f"n => ({_FINISHED_RUNS})() > n && document.querySelector(\"{IDLE}\") !== null",
                           arg=finished, timeout=120_000)
    wait_for_app(page)
