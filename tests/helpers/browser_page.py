"""Shared steps of the browser tests (Playwright pages of the tiny app): a headless Chromium, picking an example,
reading a video's state, waiting for a result, and reading a served video's frames."""

import os
import shutil
import time
import urllib.request

CHROMIUM = os.environ.get("STEADYDANCER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
RESULT = "Result (TINY MODE: noise)"
HISTORY = "History (click one to see it again)"


def open_page(browser, url: str, width: int = 1400, height: int = 1800):
    """A new visitor (its own browser context, so its own session and history) on the loaded page; `page.errors`
    collects the page's script errors."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Not "networkidle": the page keeps Gradio's heartbeat stream open (the session's history is per-page state).
    page.goto(url, wait_until="load", timeout=60_000)
    page.get_by_role("button", name="Animate").wait_for(timeout=60_000)
    page.errors = errors
    return page


def block(page, label: str):
    """The component block whose label is `label`."""
    return page.locator(".block").filter(has=page.get_by_text(label, exact=True)).last


def open_advanced(page) -> None:
    """Opens the Advanced accordion. Gradio renders an accordion's children when it first opens and, in that moment,
    can put a slider's old value back over one just typed: wait until the steps box is there and has been for a
    second before anything is typed into it."""
    page.get_by_text("Advanced", exact=True).first.click()
    block(page, "Steps (custom speed only)").locator("input[type=number]").wait_for(state="visible")
    time.sleep(1.0)


def set_number(box, value, timeout: float = 10.0) -> None:
    """Types `value` into a number box and commits it (Tab: a number box commits on blur); types it again while the
    page shows another value (the re-render above, late on a loaded machine), so a test never runs on a value it
    did not set."""
    deadline = time.time() + timeout
    while True:
        box.fill(str(value))
        box.press("Tab")
        time.sleep(0.5)
        if box.input_value() == str(value):
            return
        if time.time() > deadline:
            raise AssertionError(f"the box shows {box.input_value()!r}, not the {value} typed")


def pick_example(page, label: str) -> None:
    """Clicks the thumbnail of the example labelled `label` in the example gallery."""
    from steadydancer_space.examples import EXAMPLES

    index = [example.label for example in EXAMPLES].index(label)
    page.locator("#examples img").nth(index).click()


def video_state(page, label: str) -> dict:
    """readyState, size and src of the <video> inside the block labelled `label` (waits for it to load)."""
    video = block(page, label).locator("video").first
    video.wait_for(state="attached", timeout=120_000)
    page.wait_for_function("v => v.readyState >= 2", arg=video.element_handle(), timeout=60_000)
    return video.evaluate("v => ({ready: v.readyState, width: v.videoWidth, height: v.videoHeight, src: v.src})")


def result_src(page) -> str | None:
    video = block(page, RESULT).locator("video")
    return video.first.get_attribute("src") if video.count() else None


def history_count(page) -> int:
    return block(page, HISTORY).locator("img").count()


def wait_for_history(page, count: int, timeout: float = 180) -> None:
    """Waits until the history shows `count` results; fails with the error toast's text if a job failed."""
    deadline = time.time() + timeout
    while time.time() < deadline and history_count(page) < count:
        toasts = page.locator(".toast-body")
        assert toasts.count() == 0, toasts.first.inner_text()
        time.sleep(0.2)
    assert history_count(page) >= count


def animate_and_wait_for_a_new_result(page) -> str:
    """Clicks Animate and waits until the result video is a new one (its src); fails with the error toast's text if
    the job failed instead."""
    before = result_src(page)
    page.get_by_role("button", name="Animate").click()
    deadline = time.time() + 180
    while time.time() < deadline and result_src(page) in (None, before):
        toasts = page.locator(".toast-body")
        assert toasts.count() == 0, toasts.first.inner_text()
        time.sleep(0.2)
    assert result_src(page) not in (None, before)
    return result_src(page)


def video_frames(url: str, folder):
    """The decoded frames of a video the app serves at `url`: (N, H, W, 3) uint8."""
    import numpy as np

    from steadydancer.pose import iter_video_frames

    path = os.path.join(folder, f"video_{abs(hash(url))}.mp4")
    with urllib.request.urlopen(url, timeout=60) as response, open(path, "wb") as f:
        shutil.copyfileobj(response, f)
    return np.stack([decoded.image for decoded in iter_video_frames(path, None)])
