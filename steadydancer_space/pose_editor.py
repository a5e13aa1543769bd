"""The pose editor of the page: the photo with its skeleton, joints dragged (mouse or touch), removed or placed, on
the photo's skeleton or on any frame of the aligned motion; the retarget and smoothing settings as plain controls.

Everything it changes ends up in one textbox, `pose_edits`: the JSON object `/extract_poses` and `/animate` take
(`steadydancer.pose.edits`). The drawing and dragging run in the browser (static/pose_editor.js, a `gr.HTML`'s
`js_on_load`), which writes the joint edits into a hidden textbox; `compose_edits` folds them with the controls.
"""

import base64
import io
import json
from pathlib import Path

import gradio as gr
import numpy as np

from steadydancer.pose.edits import DEFAULT_EASE_FRAMES, MAX_EASE_FRAMES, SCALE_RANGE, PoseEdits
from steadydancer.pose.errors import PoseError

from .poses import PoseStep

STATIC = Path(__file__).with_name("static")
EDITOR_SIDE = 640  # the photo is sent at most this large: enough to place a joint, small to send
FIT_LABELS = {"none": "No: the released per-limb alignment", "auto": "Yes: the photo's framing decides",
              "full_body": "Full body", "knees_up": "Knees up", "waist_up": "Waist up",
              "head_and_shoulders": "Head and shoulders"}
TEMPLATE = """<div class="pe-bar">
  <button class="pe-mode pe-on" data-tool="move">Move</button>
  <button class="pe-mode" data-tool="remove">Remove</button>
  <select class="pe-place"></select>
  <span class="pe-frame-label"></span>
  <input class="pe-frame" type="range" min="0" max="0" value="0" step="1"
         aria-label="Frame (0: the photo's skeleton)">
</div>
<div class="pe-empty">Click <b>Extract poses</b>: the photo's skeleton and the aligned motion appear here.</div>
<canvas></canvas>"""


def _points(array: np.ndarray) -> list:
    return np.round(array, 4).tolist()


def editor_state(step: PoseStep) -> str:
    """What the editor draws (JSON): the photo (a JPEG data URL), its skeleton and every output frame's keypoints,
    all as fractions of the photo, and the joint edits already made (so they stay editable)."""
    import PIL.Image

    photo = PIL.Image.fromarray(step.reference)
    photo.thumbnail((EDITOR_SIDE, EDITOR_SIDE))
    buffer = io.BytesIO()
    photo.convert("RGB").save(buffer, format="JPEG", quality=85)
    prepared, edits = step.prepared, step.options.edits.to_dict()
    joints = {"reference": edits.get("reference", {}),
              "frames": {str(f["frame"]): f["joints"] for f in edits.get("frames", [])}}
    return json.dumps({
        "image": "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode(),
        "width": prepared.width, "height": prepared.height,
        "reference": _pose(prepared.reference_pose),
        "frames": [_pose(p) for p in prepared.poses.poses],
        "edits": joints,
    })


def _pose(pose) -> dict:
    return {"body": _points(np.where(pose.body_present[:, None], pose.body, -1.0)), "hands": _points(pose.hands),
            "face": _points(pose.face)}


def compose_edits(joint_edits: str, fit: str, limb_lengths: bool, stable_ground: bool, scale: float,
                  offset_x: float, offset_y: float, smoothing: float, ease_frames: int):
    """The `pose_edits` JSON from the editor's joint edits and the controls (unchanged when they do not parse)."""
    try:
        data = json.loads(joint_edits) if joint_edits else {}
        data.update(ease_frames=int(ease_frames), smoothing={"strength": float(smoothing)},
                    retarget={"fit": fit, "limb_lengths": "photo" if limb_lengths else "dancer",
                              "stable_ground": bool(stable_ground), "scale": float(scale),
                              "offset": [float(offset_x), float(offset_y)]})
        return PoseEdits.from_dict(data).to_json()
    except (ValueError, TypeError, PoseError):
        return gr.update()


def build_pose_editor() -> tuple[gr.HTML, gr.Textbox, gr.Dropdown]:
    """The editor's components, wired among themselves; returns (the editor view, the `pose_edits` textbox, the
    fit control, which an example sets)."""
    with gr.Accordion("Pose editor: fix the skeleton, retarget the motion", open=True):
        gr.Markdown("Drag a joint (mouse or finger); **Remove** deletes a false one; the list places a missed one. "
                    "The slider picks the photo's skeleton (0) or a frame of the motion: an edit there fades into "
                    "the neighbouring frames. Extract again to see the edited poses.")
        view = gr.HTML(value="", html_template=TEMPLATE, css_template=(STATIC / "pose_editor.css").read_text(),
                       js_on_load=(STATIC / "pose_editor.js").read_text(), elem_id="pose-editor")
        joint_edits = gr.Textbox(visible="hidden", elem_id="pose-editor-joints")
        with gr.Row():
            fit = gr.Dropdown(label="Fit the motion to the photo's framing", value="none",
                              choices=[(label, key) for key, label in FIT_LABELS.items()])
            limb_lengths = gr.Checkbox(label="Limb lengths from the photo (not the dancer's)", value=False)
            stable_ground = gr.Checkbox(label="Stable ground (feet where the photo has them)", value=False)
        with gr.Row():
            scale = gr.Slider(label="Motion scale", minimum=SCALE_RANGE[0], maximum=SCALE_RANGE[1], step=0.05,
                              value=1.0)
            offset_x = gr.Slider(label="Motion offset right", minimum=-0.5, maximum=0.5, step=0.01, value=0.0)
            offset_y = gr.Slider(label="Motion offset down", minimum=-0.5, maximum=0.5, step=0.01, value=0.0)
        with gr.Row():
            smoothing = gr.Slider(label="Smoothing (jittery detections)", minimum=0.0, maximum=1.0, step=0.05,
                                  value=0.0)
            ease = gr.Slider(label="Frame edits fade over (frames)", minimum=0, maximum=MAX_EASE_FRAMES, step=1,
                             value=DEFAULT_EASE_FRAMES)
        # "{}" (no edits) rather than empty: API clients then see a default and may leave the parameter out.
        pose_edits = gr.Textbox(label="pose_edits (JSON; what the editor made, the API's pose_edits)", lines=2,
                                value="{}", elem_id="pose-edits")
    controls = [joint_edits, fit, limb_lengths, stable_ground, scale, offset_x, offset_y, smoothing, ease]
    gr.on([c.change for c in controls], compose_edits, controls, pose_edits, queue=False, api_visibility="private",
          show_progress="hidden")
    return view, pose_edits, fit
