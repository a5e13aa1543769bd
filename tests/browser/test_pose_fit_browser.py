"""Fitting a full-body dance to a waist-up photo through the page (headless Chromium, `app.py --tiny`): the close-up
example, the pose editor's fit control set to "Waist up", Extract; the pose video's shoulders and hips then sit on
the photo's. The joints are found in the decoded pose video by their OpenPose colours (drawn at full brightness over
the dimmed limbs)."""

import json

import numpy as np
from helpers.browser_page import block, pick_example, video_frames
from helpers.paths import EXAMPLES, TEST_OUTPUT

from steadydancer.pose.render import COLORS
from steadydancer_space.examples import EXAMPLES as TABLE

CLOSEUP = next(example for example in TABLE if example.pose_edits != "{}")
PHOTO_BODY = np.array(json.loads((EXAMPLES / CLOSEUP.reference_keypoints).read_text())["frames"][0]["body"])
TORSO = {"right_shoulder": 2, "left_shoulder": 5, "right_hip": 8, "left_hip": 11}
POSE_VIDEO = "Pose video (TINY MODE: noise)"


def choose_fit(page, label: str) -> None:
    page.get_by_label("Fit the motion to the photo's framing").click()
    page.get_by_role("option", name=label, exact=True).click()


def joint_position(frame: np.ndarray, joint: int, near: np.ndarray, reach: float) -> np.ndarray | None:
    """Centre (fractions of the frame) of the pixels in joint `joint`'s colour within `reach` (fraction of the
    height) of `near`, or None when there are none. The released drawing lists colours as BGR: the RGB frame
    holds them reversed."""
    h, w = frame.shape[:2]
    colour = np.array(COLORS[joint][::-1], dtype=np.int16)
    match = np.abs(frame.astype(np.int16) - colour).max(axis=-1) < 60
    rows, cols = np.nonzero(match)
    close = np.hypot(cols / h - near[0] * w / h, rows / h - near[1]) < reach
    if not close.any():
        return None
    return np.array([cols[close].mean() / w, rows[close].mean() / h])


def edits_include(page, text: str, present: bool = True) -> None:
    check = f"(document.querySelector('#pose-edits textarea')?.value || '').includes('{text}')"
    page.wait_for_function(check if present else f"!{check}", timeout=60_000)


def test_waist_up_fit_puts_the_dances_shoulders_and_hips_on_the_photos(page):
    page.get_by_text("Poses: check the motion before spending GPU time").click()  # the editor's folded section
    pick_example(page, CLOSEUP.label)
    edits_box = page.locator("#pose-edits textarea")
    edits_include(page, "waist_up")
    choose_fit(page, "No: the released per-limb alignment")  # the example's fit undone, then chosen by hand
    edits_include(page, "waist_up", present=False)
    choose_fit(page, "Waist up")
    edits_include(page, "waist_up")
    assert json.loads(edits_box.input_value())["retarget"]["fit"] == "waist_up"

    page.get_by_role("button", name="Extract poses").click()
    video = block(page, POSE_VIDEO).locator("video").first
    video.wait_for(state="attached", timeout=120_000)
    page.screenshot(path=str(TEST_OUTPUT / "pose_fit_waist_up.png"), full_page=True)
    frames = video_frames(video.get_attribute("src"), TEST_OUTPUT)

    # The tiny app's pose video is small (about 80 x 128) and compressed, so a joint is found to within a few
    # pixels. Every frame draws each shoulder and hip near the photo's (within 0.15 of its height: the dancer's torso
    # sways about the place the fit puts it); on the first frame, where the fit is measured, within a few pixels.
    distances = np.zeros((len(frames), len(TORSO)))
    for i, frame in enumerate(frames):
        for k, (name, joint) in enumerate(TORSO.items()):
            found = joint_position(frame, joint, PHOTO_BODY[joint], reach=0.15)
            assert found is not None, f"frame {i}: no {name} drawn near the photo's"
            distances[i, k] = np.hypot((found[0] - PHOTO_BODY[joint][0]) * frame.shape[1] / frame.shape[0],
                                       found[1] - PHOTO_BODY[joint][1])
    assert distances[0].mean() < 0.04, distances[0]
    assert distances.mean() < 0.07, distances.mean()
