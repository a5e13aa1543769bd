"""A visitor's first minute, in a real browser (headless Chromium on `app.py --tiny`, fixtures in conftest.py): the
first screen at desktop and phone sizes, an example picked from its thumbnail, the estimate in plain words, the
length boxes, "Use these settings" making the same video again, the chosen speed applying to an example, and a long
(windowed) clip with one progress bar and previews. Screenshots go to test-output/."""

import json
import re
import time

import numpy as np
import pytest
from helpers.browser_page import (animate_and_wait_for_a_new_result, block, history_count, open_advanced, open_page,
                                  pick_example, result_src, set_number, video_frames, wait_for_history)
from helpers.paths import EXAMPLES, TEST_OUTPUT

from steadydancer.defaults import PRESETS
from steadydancer_space.examples import EXAMPLES as EXAMPLE_TABLE
from steadydancer_space.history import FORM_FIELDS

BLUE = "Blue hoodie + groove (video with a beat)"
RED = "Red dress + waving (keypoints)"


def _inside(page, locator, height: int) -> bool:
    box = locator.bounding_box()
    width = page.viewport_size["width"]
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= height and box["x"] + box["width"] <= width


def test_first_screen_at_desktop_size(app, browser):
    page = open_page(browser, app.url, 1400, 900)
    try:
        time.sleep(1.0)  # the thumbnails and the estimate arrive after the page
        page.screenshot(path=str(TEST_OUTPUT / "first_screen_1400x900.png"))
        for what, locator in (("examples", page.locator("#examples")),
                              ("photo uploader", block(page, "Photo of a person")),
                              ("motion uploader", block(page, "Driving video")),
                              ("speed", block(page, "Speed")),
                              ("Animate", page.get_by_role("button", name="Animate"))):
            assert _inside(page, locator, 900), f"the {what} is not inside the first screen: {locator.bounding_box()}"
        assert page.locator("#examples img").count() == len(EXAMPLE_TABLE)
        estimate = page.locator("#estimate").inner_text()
        assert re.match(r"About \d+ (s|min) of GPU time \(fast, \d+ frames at \d+p\)", estimate), estimate
        for jargon in ("4n+1", "Shift", "shift", "pose guidance window", "distillation LoRA", "transformer passes"):
            assert jargon not in page.locator("label span, .label-wrap span, button").all_inner_texts().__str__(), \
                jargon
        assert page.get_by_role("button", name="Cancel").is_disabled()  # nothing of this visitor runs
        assert not page.get_by_text("Seed used", exact=False).first.is_visible()  # no run, no seed to show
        page.get_by_text("Advanced", exact=True).first.click()
        placeholder = block(page, "What to avoid (negative prompt)").locator("textarea").get_attribute("placeholder")
        assert placeholder.isascii(), placeholder  # never boxes of tofu where no CJK font is installed
        assert not page.errors, page.errors
    finally:
        page.context.close()


def test_first_screen_at_phone_size(app, browser):
    page = open_page(browser, app.url, 390, 844)
    try:
        time.sleep(1.0)
        page.screenshot(path=str(TEST_OUTPUT / "first_screen_390x844.png"))
        page.screenshot(path=str(TEST_OUTPUT / "first_screen_390x844_full.png"), full_page=True)
        assert _inside(page, page.locator("#examples"), 844)
        # The columns stack, so the buttons stay at the bottom of the screen until the page reaches them.
        animate = page.get_by_role("button", name="Animate")
        assert _inside(page, animate, 844), animate.bounding_box()
        page.mouse.wheel(0, 300)  # the photo uploader moves up; the buttons stay
        time.sleep(0.5)
        assert _inside(page, animate, 844), "Animate left the screen while scrolling down to it"
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways on a phone ({width} px wide)"
        assert not page.errors, page.errors
    finally:
        page.context.close()


def test_example_thumbnail_then_animate(page):
    """A thumbnail fills the form and plays the example's result; Animate then makes another; both enter the
    history."""
    pick_example(page, BLUE)
    wait_for_history(page, 1)
    assert block(page, "Photo of a person").locator("img").count() == 1
    first = result_src(page)
    second = animate_and_wait_for_a_new_result(page)
    wait_for_history(page, 2)
    page.screenshot(path=str(TEST_OUTPUT / "example_then_animate.png"), full_page=True)
    assert first != second and history_count(page) == 2
    assert not page.errors, page.errors


def test_use_these_settings_makes_the_same_video(page, tmp_path):
    """A run with a random seed; then its history entry's "Use these settings" and Animate: the same frames."""
    pick_example(page, RED)
    wait_for_history(page, 1)
    first = animate_and_wait_for_a_new_result(page)  # "New seed each time" is on: a seed nobody chose
    wait_for_history(page, 2)
    seed = block(page, "Seed used (TINY MODE: noise)").locator("input").input_value()
    # Another example in the form, so the settings must come back from the entry, files included.
    pick_example(page, BLUE)
    wait_for_history(page, 3)
    block(page, "History (click one to see it again)").locator("img").nth(1).click()  # the run with seed `seed`
    page.get_by_text("Selected result").first.wait_for()
    time.sleep(1.0)
    page.get_by_role("button", name="Use these settings").last.click()
    time.sleep(2.0)  # the form's change events (motion tabs, frames and seconds) settle
    page.screenshot(path=str(TEST_OUTPUT / "use_these_settings.png"), full_page=True)
    again = animate_and_wait_for_a_new_result(page)
    assert block(page, "Seed used (TINY MODE: noise)").locator("input").input_value() == seed
    frames_a, frames_b = video_frames(first, tmp_path), video_frames(again, tmp_path)
    assert frames_a.shape == frames_b.shape and np.array_equal(frames_a, frames_b)
    assert not page.errors, page.errors


def test_download_all_is_one_zip_with_every_output(page, tmp_path):
    import zipfile

    pick_example(page, RED)
    wait_for_history(page, 1)
    with page.expect_download() as download:
        page.get_by_role("button", name="Download all (zip)").first.click()
    path = tmp_path / "all.zip"
    download.value.save_as(path)
    with zipfile.ZipFile(path) as bundle:
        names = sorted(bundle.namelist())
        recipe = json.loads(bundle.read("recipe.json"))
    assert names == ["poses.mp4", "recipe.json", "result.mp4", "side_by_side.mp4"], names
    assert set(recipe) == set(FORM_FIELDS[4:]) and recipe["seed"] == 42


def test_the_chosen_speed_applies_to_an_example(page):
    page.get_by_text("Quality (about 20x the GPU time)").click()
    pick_example(page, RED)
    wait_for_history(page, 1, timeout=300)
    steps = PRESETS["quality"].settings.num_inference_steps
    report = block(page, "Side by side and recipe")
    assert page.get_by_text(f"{steps} steps", exact=False).first.is_visible(), report.inner_text()


def test_the_estimate_follows_the_speed(page):
    """A slider typed makes the speed custom and a preset picked sets the sliders; the estimate always ends on the
    settings shown (never on the half-changed pair, which the request refuses as a contradiction)."""
    open_advanced(page)
    steps = block(page, "Steps (custom speed only)").locator("input[type=number]")
    set_number(steps, 12)
    # textContent: the explanation is folded. 12 steps make more than 12 passes (pose-guidance passes added).
    page.wait_for_function("""() => {
        const m = document.querySelector('#estimate').textContent.match(/(\\d+) transformer passes/);
        return m !== null && Number(m[1]) > 12; }""", timeout=30_000)
    text = page.locator("#estimate").text_content()
    assert "(custom settings," in text and " 12 transformer passes" not in text, text
    page.get_by_text("Quality (about 20x the GPU time)").click()
    page.wait_for_function("() => document.querySelector('#estimate').textContent.includes('(quality,')",
                           timeout=30_000)
    time.sleep(1.0)  # a late estimate of the half-changed pair would have landed by now
    text = page.locator("#estimate").text_content()
    assert "(quality," in text and "unavailable" not in text, text
    assert steps.input_value() == str(PRESETS["quality"].settings.num_inference_steps)


@pytest.mark.parametrize("typed", ["-5", "500"])
def test_typed_frames_are_corrected(page, typed):
    box = block(page, "Length (frames)").locator("input[type=number]")
    box.fill(typed)
    box.press("Enter")
    box.press("Tab")
    limits = box.evaluate("e => [Number(e.min), Number(e.max)]")
    expected = limits[0] if float(typed) < limits[0] else limits[1]
    page.wait_for_function("([e, v]) => Number(e.value) === v", arg=[box.element_handle(), expected], timeout=10_000)
    seconds_box = block(page, "Length (seconds)").locator("input")
    page.wait_for_function("([e, v]) => Math.abs(Number(e.value) - v) < 0.01",
                           arg=[seconds_box.element_handle(), expected / 16], timeout=10_000)


def test_typed_seconds_are_corrected(page):
    seconds = block(page, "Length (seconds)").locator("input")
    frames = block(page, "Length (frames)").locator("input[type=number]")
    seconds.fill("0.1")
    seconds.press("Enter")
    minimum = int(frames.evaluate("e => Number(e.min)"))
    page.wait_for_function("([e, v]) => Number(e.value) === v", arg=[frames.element_handle(), minimum],
                           timeout=10_000)
    assert abs(float(seconds.input_value()) - minimum / 16) < 0.01


def test_a_long_clip_has_one_progress_bar_and_previews(page, tmp_path):
    """25 s (401 frames: 5 windows): the progress goes from 0 to 100 % once across the windows, saying which window
    runs, and the preview shows frames while the windows run."""
    dance = json.loads((EXAMPLES / "dance_wave.json").read_text())
    dance["frames"] = (dance["frames"] * 5)[:410]  # long enough for 25 s
    keypoints = tmp_path / "long_dance.json"
    keypoints.write_text(json.dumps(dance))
    block(page, "Photo of a person").locator("input[type=file]").set_input_files(str(EXAMPLES / "ref_red_dress.png"))
    page.get_by_role("tab", name="Motion: keypoints").click()
    block(page, "Keypoint JSON (used instead of the video when given)").locator("input[type=file]") \
        .set_input_files(str(keypoints))
    seconds = block(page, "Length (seconds)").locator("input")
    seconds.fill("25")
    seconds.press("Enter")
    frames = block(page, "Length (frames)").locator("input[type=number]")
    page.wait_for_function("e => Number(e.value) === 401", arg=frames.element_handle(), timeout=10_000)
    time.sleep(1.0)
    page.get_by_role("button", name="Animate").click()
    preview = block(page, "Preview while it runs (the video each step predicts, 4 frames) (TINY MODE: noise)")
    readings, previews, deadline = [], set(), time.time() + 600
    while time.time() < deadline and history_count(page) < 1:
        for text in page.locator(".progress-text, .progress-level").all_inner_texts():
            if "Window" in text and (match := re.search(r"([\d.]+)%", text)):
                readings.append((text, float(match.group(1))))
        for image in preview.locator("img").all():
            if src := image.get_attribute("src"):
                previews.add(src)
        if len(readings) == 30:
            page.screenshot(path=str(TEST_OUTPUT / "long_clip_running.png"), full_page=True)
        time.sleep(0.1)
    wait_for_history(page, 1, timeout=5)
    percents = [p for _, p in readings]
    assert percents, "no window progress was shown"
    assert percents == sorted(percents), readings  # one bar going up, never restarting per window
    assert percents[0] < 25 and percents[-1] > 75, readings
    assert {re.search(r"Window (\d) of 5", t).group(1) for t, _ in readings} >= {"1", "3", "5"}, readings
    assert len(previews) >= 3, "the preview did not show the windows' frames while they ran"
    assert not page.errors, page.errors
