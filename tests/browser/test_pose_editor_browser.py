"""The pose editor in a real browser (headless Chromium, `app.py --tiny`): dragging the reference skeleton's right
wrist writes `pose_edits`, the first pose frame then moves at that joint only, and the edited recipe replayed through
gradio_client gives the same pose frames. Skips like test_app_browser.py when Playwright or Chromium is missing."""

import json
import os
import shutil

import numpy as np
import pytest
from helpers.app_launcher import launch_tiny_app
from helpers.browser_page import pick_example
from helpers.paths import EXAMPLES, TEST_OUTPUT

CHROMIUM = os.environ.get("STEADYDANCER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set STEADYDANCER_CHROMIUM)",
                allow_module_level=True)

REFERENCE_POSE = json.loads((EXAMPLES / "ref_red_dress.json").read_text())["frames"][0]["body"]
RIGHT_WRIST = 4


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    yield from launch_tiny_app(tmp_path_factory, "pose_editor_browser")


@pytest.fixture
def page(app):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(app.url, wait_until="load", timeout=60_000)
        page.get_by_role("button", name="Animate").wait_for(timeout=60_000)
        yield page
        browser.close()


def first_frame(path) -> np.ndarray:
    from steadydancer.pose.video import iter_video_frames

    return next(iter(iter_video_frames(path, None))).image.astype(np.int16)


def extract(client, pose_edits: str):
    from gradio_client import handle_file

    return client.predict(handle_file(str(EXAMPLES / "ref_red_dress.png")), None,
                          handle_file(str(EXAMPLES / "dance_wave.json")), "480p", 9, "real_time", True, True, 2,
                          False, "default", handle_file(str(EXAMPLES / "ref_red_dress.json")), pose_edits,
                          api_name="/extract_poses")


def test_dragging_the_right_wrist_moves_that_joint_only_and_the_recipe_replays_it(app, page):
    from gradio_client import Client, handle_file

    page.get_by_text("Poses: check the motion before spending GPU time").click()  # the editor's folded section
    pick_example(page, "Red dress + waving (keypoints)")
    page.get_by_text("Start of the clip").click()
    page.get_by_label("Smooth start", exact=True).check()
    page.get_by_role("button", name="Extract poses").click()
    canvas = page.locator("#pose-editor canvas")
    page.wait_for_function("document.querySelector('#pose-editor canvas').height > 0", timeout=120_000)
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    x, y = REFERENCE_POSE[RIGHT_WRIST]
    start = (box["x"] + x * box["width"], box["y"] + y * box["height"])
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(start[0] - 0.1 * box["width"], start[1] + 0.05 * box["height"], steps=8)
    page.mouse.up()
    page.screenshot(path=str(TEST_OUTPUT / "pose_editor_drag.png"), full_page=True)
    edits_box = page.locator("#pose-edits textarea")
    page.wait_for_function("document.querySelector('#pose-edits textarea').value.includes('right_wrist')",
                           timeout=30_000)
    edits = json.loads(edits_box.input_value())
    assert set(edits["reference"]) == {"right_wrist"}
    np.testing.assert_allclose(edits["reference"]["right_wrist"], [x - 0.1, y + 0.05], atol=0.01)

    client = Client(app.url, verbose=False)
    plain, edited = first_frame(extract(client, "")[0]), first_frame(extract(client, edits_box.input_value())[0])
    changed = np.abs(edited - plain).max(axis=-1) > 60
    assert changed.any()
    rows, cols = np.nonzero(changed)
    h, w = changed.shape
    near = [(x - 0.1) * w, (y + 0.05) * h], [x * w, y * h]  # where the wrist (and its hand) was and went
    # Only the right forearm, wrist and hand change: every changed pixel is near the old or the new wrist or on the
    # forearm between the elbow and them.
    elbow = np.array(REFERENCE_POSE[3]) * [w, h]
    reach = 0.12 * max(h, w) + np.linalg.norm(np.array(near[1]) - elbow)
    assert all(min(np.hypot(c - p[0], r - p[1]) for p in near) < reach for r, c in zip(rows, cols))
    far_left = changed[:, int(0.75 * w):]  # the left arm's side of the picture never changes
    assert not far_left.any()

    # The edited job's recipe, replayed through the API, draws the same pose frames.
    files = dict(reference=handle_file(str(EXAMPLES / "ref_red_dress.png")), driving_video=None,
                 keypoints=handle_file(str(EXAMPLES / "dance_wave.json")),
                 reference_keypoints=handle_file(str(EXAMPLES / "ref_red_dress.json")))
    first = client.predict(**files, resolution="480p", num_frames=9, smooth_start=True, smooth_start_frames=2,
                           pose_edits=edits_box.input_value(), api_name="/animate")
    recipe = first[5]
    assert json.loads(recipe["pose_edits"]) == edits
    again = client.predict(**files, **recipe, api_name="/animate")
    # The same drawing encoded twice: x264 with threads rounds a few pixels differently each time (a moved joint
    # changes whole strokes, far above this).
    difference = np.abs(first_frame(again[1]) - first_frame(first[1]))
    assert difference.max() <= 24 and difference.mean() < 0.5, (difference.max(), difference.mean())
    assert np.abs(first_frame(first[1]) - plain).max() > 60  # and it is the edited one
