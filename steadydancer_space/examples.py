"""The example gallery: which drawn character goes with which dance and prompt. The files themselves are made by
`examples/make_examples.py` (no third-party media). Each character ships its keypoints (drawn from a known skeleton),
so no example depends on the detector reading a drawing."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    reference: str
    video: str | None
    keypoints: str | None
    prompt: str
    label: str
    num_frames: int = 49
    reference_keypoints: str | None = None  # the reference's pose (JSON, one frame), given instead of detected
    thumbnail: str | None = None  # the photo beside its pose motion (a GIF: inputs, never a result)
    pose_edits: str = "{}"  # the API's pose_edits (steadydancer.pose.edits), e.g. a close-up's retargeting


EXAMPLES = (
    Example("ref_red_dress.png", None, "dance_wave.json",
            "A cartoon woman in a red dress waves her arms overhead and sways, plain studio background.",
            "Red dress + waving (keypoints)", reference_keypoints="ref_red_dress.json", thumbnail="thumb_red_dress.gif"),
    Example("ref_blue_hoodie.png", "drive_groove_beat.mp4", None,
            "A cartoon man in a blue hoodie grooves to the beat, bouncing, plain studio background.",
            "Blue hoodie + groove (video with a beat)", reference_keypoints="ref_blue_hoodie.json",
            thumbnail="thumb_blue_hoodie.gif"),
    Example("ref_green_suit.png", None, "dance_sway.json",
            "A cartoon person in a green jumpsuit steps side to side swinging the arms, plain studio background.",
            "Green jumpsuit + side steps (keypoints)", reference_keypoints="ref_green_suit.json",
            thumbnail="thumb_green_suit.gif"),
    # A close-up: the released alignment guesses the hidden arms from the big head and swings them out of the
    # frame; the motion fitted to the photo's waist-up framing keeps them in, shoulders and hips on the photo's.
    Example("ref_closeup_poncho.png", None, "dance_sway.json",
            "A cartoon character with a big head in an orange poncho sways side to side, close-up, plain background.",
            "Close-up + side steps (motion fitted waist up)", reference_keypoints="ref_closeup_poncho.json",
            thumbnail="thumb_closeup_poncho.gif", pose_edits='{"retarget":{"fit":"waist_up"}}'),
)
# The page's opening picture: the first example's photo beside its pose motion, larger (inputs, not a result).
DEMO_MEDIA = "demo_inputs.gif"


def example_files(example: Example, directory: str) -> tuple:
    """An example's files in `directory`: reference, driving video, keypoints, reference keypoints (None: absent)."""
    import os

    return tuple(os.path.join(directory, name) if name else None
                 for name in (example.reference, example.video, example.keypoints, example.reference_keypoints))


def example_named(label: str) -> Example:
    return next(example for example in EXAMPLES if example.label == label)
