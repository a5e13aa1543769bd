"""The page in a real browser: headless Chromium (Playwright) loads `app.py --tiny`, runs an example end to end and the
pose step, checks that the result video plays, and saves screenshots under test-output/.

Fixtures: tests/browser/conftest.py (skips, saying which is missing, without playwright or Chromium).
"""

from pathlib import Path

import pytest
from helpers.browser_page import (RESULT, animate_and_wait_for_a_new_result, block, open_advanced, pick_example,
                                  set_number, video_state)
from helpers.paths import REPO, TEST_OUTPUT

OUTPUT = TEST_OUTPUT


@pytest.fixture
def example_loaded(page):
    """The visitor clicked the video example: its inputs are filled and its cached result is shown."""
    pick_example(page, "Blue hoodie + groove (video with a beat)")
    video_state(page, RESULT)


@pytest.fixture
def two_results(page, example_loaded):
    """The visitor ran the example twice: its history holds two results of its own."""
    for _ in range(2):
        animate_and_wait_for_a_new_result(page)


def test_page_says_tiny_mode(page):
    assert page.get_by_text("TINY MODE", exact=False).first.is_visible()
    assert page.get_by_role("button", name="Animate").is_visible()
    assert page.get_by_role("button", name="Extract poses").is_visible()


def test_example_runs_end_to_end(page):
    pick_example(page, "Blue hoodie + groove (video with a beat)")
    state = video_state(page, RESULT)
    page.get_by_text("Seed used").first.scroll_into_view_if_needed()
    page.screenshot(path=str(OUTPUT / "app_example.png"), full_page=True)
    assert state["src"].endswith(".mp4")
    assert (state["width"], state["height"]) == (80, 128)  # the browser decoded our H.264
    assert not page.errors, page.errors


@pytest.mark.usefixtures("example_loaded")
def test_extract_poses_button(page):
    page.get_by_role("button", name="Extract poses").click()
    page.get_by_text("pose frames", exact=False).first.wait_for(timeout=120_000)
    state = video_state(page, "Pose video (TINY MODE: noise)")
    page.screenshot(path=str(OUTPUT / "app_poses.png"), full_page=True)
    assert (state["width"], state["height"]) == (80, 128)
    assert page.get_by_text("The poses are FAKE", exact=False).first.is_visible()


@pytest.mark.usefixtures("example_loaded")
def test_preview_updates_and_history_keeps_two_runs(page):
    """Two runs of the loaded example: the preview strip changes while each runs, and the session's history then shows
    both results besides the example's."""
    import time

    preview = page.locator(".block").filter(has=page.get_by_text(
        "Preview while it runs (the video each step predicts, 4 frames) (TINY MODE: noise)", exact=True)).last
    history = page.locator(".block").filter(has=page.get_by_text("History (click one to see it again)",
                                                                 exact=True)).last
    previews = set()
    before = history.locator("img").count()  # the example's result is in the history too
    for run in (1, 2):
        page.get_by_role("button", name="Animate").click()
        deadline = time.time() + 180
        while time.time() < deadline and history.locator("img").count() < before + run:
            for image in preview.locator("img").all():
                if src := image.get_attribute("src"):
                    previews.add(src)
            time.sleep(0.1)
    page.get_by_text("Your results in this session").first.scroll_into_view_if_needed()
    page.screenshot(path=str(OUTPUT / "app_history.png"), full_page=True)
    assert history.locator("img").count() == before + 2
    assert len(previews) >= 2, "the preview did not update while the jobs ran"
    assert not page.errors, page.errors


@pytest.mark.usefixtures("example_loaded")
def test_cancel_right_after_animate_says_cancelled_and_shows_nothing_stale(app, page):
    """Cancel 0.1 s after Animate (the job is queued or starting): the visitor reads "Cancelled.", the previous result
    is gone, and the server's counters show the job never ran to the end."""
    import time

    from gradio_client import Client

    client = Client(app.url, verbose=False)
    before = client.predict(api_name="/tiny_stats")
    open_advanced(page)
    steps = block(page, "Steps (custom speed only)").locator("input[type=number]")
    set_number(steps, 80)  # long enough that only the cancel can end it
    page.get_by_role("button", name="Animate").click()
    time.sleep(0.1)
    page.get_by_role("button", name="Cancel").click()
    page.get_by_text("Cancelled.", exact=False).first.wait_for(timeout=30_000)
    deadline = time.time() + 60
    while time.time() < deadline and client.predict(api_name="/tiny_stats")["running"]:
        time.sleep(0.2)
    time.sleep(1.0)  # a job the cancel missed would be running (or have run) by now
    after = client.predict(api_name="/tiny_stats")
    result = page.locator(".block").filter(has=page.get_by_text("Result (TINY MODE: noise)", exact=True)).last
    page.screenshot(path=str(OUTPUT / "app_cancelled.png"), full_page=True)
    assert after["running"] == 0 and after["succeeded"] == before["succeeded"]
    assert result.locator("video").count() == 0
    set_number(steps, 4)
    # The cancelled job's own "Cancelled." toast is closed, as a visitor would, before the next job is watched.
    for close in page.locator(".toast-body .toast-close").all():
        close.click()
    page.locator(".toast-body").first.wait_for(state="detached", timeout=30_000)
    # Animate again at once: a cancel that named its (queued or ended) job must not cancel the next one.
    animate_and_wait_for_a_new_result(page)


@pytest.mark.usefixtures("two_results")
def test_another_visitor_does_not_see_that_history(app, page):
    """A second visitor (another browser context: another session) opens the page while the first one's history holds
    results: theirs starts empty, and after their own example and run it holds those two results only."""
    import time

    def history_of(some_page):
        return some_page.locator(".block").filter(has=some_page.get_by_text("History (click one to see it again)",
                                                                           exact=True)).last

    def settled_count(some_page, quiet=3.0):  # the history once no result has been added for `quiet` seconds
        count, since = history_of(some_page).locator("img").count(), time.time()
        while time.time() - since < quiet:
            time.sleep(0.2)
            if (now := history_of(some_page).locator("img").count()) != count:
                count, since = now, time.time()
        return count

    mine = settled_count(page)  # the last run may still be adding its result
    assert mine >= 2
    context = page.context.browser.new_context(viewport={"width": 1400, "height": 1800})
    try:
        other = context.new_page()
        other.goto(app.url, wait_until="load", timeout=60_000)
        other.get_by_role("button", name="Animate").wait_for(timeout=60_000)
        assert history_of(other).locator("img").count() == 0
        pick_example(other, "Blue hoodie + groove (video with a beat)")  # the example's result enters the history
        deadline = time.time() + 180
        while time.time() < deadline and history_of(other).locator("img").count() < 1:
            time.sleep(0.2)
        animate_and_wait_for_a_new_result(other)
        assert settled_count(other) == 2  # a shared history would show the first visitor's results as well
        other.screenshot(path=str(OUTPUT / "app_other_visitor.png"), full_page=True)
    finally:
        context.close()
    assert history_of(page).locator("img").count() == mine


def test_keypoint_examples_outlive_the_cache_sweep_and_other_instances(app, page):
    """Gradio sweeps its temp folder (files older than the time-to-live; everything it tracked when an instance sharing
    the folder stops). The keypoint examples must keep working through both: load the example, then Animate."""
    from helpers.app_launcher import start_app

    temp_dir = Path(app.env["GRADIO_TEMP_DIR"])
    # 1. The sweep after the time-to-live: every file in the temp folder is older than it.
    for path in sorted(temp_dir.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    pick_example(page, "Red dress + waving (keypoints)")
    video_state(page, RESULT)
    animate_and_wait_for_a_new_result(page)
    # 2. Another instance sharing the temp folder starts, then stops (SIGTERM: it deletes what it put there).
    other = start_app(["--tiny"], env=app.env, log_path=OUTPUT / "app_browser_other_instance.log")
    other.stop()
    pick_example(page, "Green jumpsuit + side steps (keypoints)")
    video_state(page, RESULT)
    animate_and_wait_for_a_new_result(page)
    pick_example(page, "Red dress + waving (keypoints)")
    animate_and_wait_for_a_new_result(page)
    assert not page.errors, page.errors


def test_a_new_photo_clears_the_reference_keypoints(page):
    """The example gave its character's keypoints: their box is open and shows the file, and the pose report says the
    detector did not run on the photo. A photo uploaded afterwards clears them (keypoints belong to their photo)."""
    import time

    pick_example(page, "Blue hoodie + groove (video with a beat)")
    video_state(page, RESULT)
    keypoints_file = page.locator('[aria-label="ref_blue_hoodie.json"]')  # the file's row in its box
    keypoints_file.first.wait_for(timeout=30_000)
    assert keypoints_file.first.is_visible()
    assert page.get_by_text("the detector did not run on the photo", exact=False).first.is_visible()
    photo = page.locator(".block").filter(has=page.get_by_text("Photo of a person", exact=True)).last
    photo.locator("input[type=file]").set_input_files(str(REPO / "examples" / "ref_green_suit.png"))
    deadline = time.time() + 30
    while time.time() < deadline and keypoints_file.count():
        time.sleep(0.2)
    page.screenshot(path=str(OUTPUT / "app_new_photo.png"), full_page=True)
    assert keypoints_file.count() == 0
    assert not page.errors, page.errors
