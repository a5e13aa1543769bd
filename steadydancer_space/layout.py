"""The page's components and their layout (no events: `app.py` wires those to its handlers)."""

from types import SimpleNamespace

import gradio as gr

from steadydancer.defaults import DEFAULT_NEGATIVE_PROMPT

from .page import frames_to_seconds
from .pose_editor import build_pose_editor
from .request import (
    DEFAULT_PRESET,
    DEFAULT_PROMPT,
    DEFAULT_SMOOTH_START_FRAMES,
    FIDELITY_LABELS,
    MOTION_LABELS,
    PRESET_LABELS,
    RESOLUTION_LABELS,
    SamplerOptions,
    shift_for,
)
from .runtime import TINY_NOTICE


def build_layout(config, fields: dict, tiny: bool, default_resolution: str, default_frames: int,
                 example_seed: int) -> tuple[gr.Blocks, SimpleNamespace]:
    """(the Blocks, its components by name); `fields`: the numeric API parameters, whose ranges the sliders take."""

    # delete_cache: uploads and outputs (copied into Gradio's cache) are deleted once older than config.file_ttl.
    with gr.Blocks(title="SteadyDancer", delete_cache=config.delete_cache) as demo:
        gr.Markdown(
            "# SteadyDancer: animate a photo with the motion of a video\n"
            "Upload a photo of a person and a driving video (or a keypoint JSON). **Extract poses** shows the motion "
            "aligned to your photo before any GPU time is spent; **Animate** makes the video. The first frame is "
            "your photo, exactly."
        )
        if tiny:
            gr.Markdown(f"## ⚠️ {TINY_NOTICE}\nThis instance runs tiny random weights on a CPU to test the app. "
                        "Every output it makes is noise.", elem_id="tiny-banner")
        with gr.Row():
            with gr.Column(scale=1):
                inputs = _input_column(config, fields, tiny, default_resolution, default_frames, example_seed)
            with gr.Column(scale=1):
                outputs = _output_column(tiny)
    return demo, SimpleNamespace(**inputs, **outputs)


def _blocks(names: dict) -> dict:
    return {name: value for name, value in names.items() if isinstance(value, gr.blocks.Block)}


def _input_column(config, fields: dict, tiny: bool, default_resolution: str, default_frames: int,
                  example_seed: int) -> dict:
    defaults = SamplerOptions()
    # image_mode=None: Gradio passes the upload on as is (our loader applies EXIF and transparency).
    reference = gr.Image(label="Reference image", type="filepath", height=360, image_mode=None)
    with gr.Accordion("The detector can't find the person?", open=False) as reference_keypoints_box:
        reference_keypoints = gr.File(
            label="Reference keypoints (JSON, one frame of the keypoint schema; replaces the detection on "
            "the photo; a new photo clears it)", file_types=[".json"], type="filepath")
    with gr.Tabs(selected="video") as motion_tabs:
        with gr.Tab("Driving video", id="video"):
            driving_video = gr.Video(label="Driving video", height=300)
        with gr.Tab("Keypoints (JSON)", id="keypoints"):
            keypoints = gr.File(label="Keypoint JSON (used instead of the video when given)",
                                file_types=[".json"], type="filepath")
    prompt = gr.Textbox(label="Prompt", value=DEFAULT_PROMPT, lines=2,
                        max_length=config.limits.max_prompt_chars)
    with gr.Row():
        num_frames = gr.Slider(label=f"Length (frames, 4n+1; above {config.window_frames}: in windows)",
                               step=4, value=default_frames,
                               **fields["num_frames"].range)
        seconds = gr.Number(label="Length (seconds at 16 fps)", value=frames_to_seconds(default_frames),
                            precision=2, minimum=0.25, step=0.25)
    with gr.Row():
        resolution = gr.Dropdown(label="Resolution", value=default_resolution,
                                 choices=[(label, key) for key, label in RESOLUTION_LABELS.items()],
                                 info="Pixel budget; the reference's aspect ratio is kept."
                                 + (" Tiny mode caps it." if tiny else ""))
        motion = gr.Radio(label="Motion speed", value="real_time",
                          choices=[(label, key) for key, label in MOTION_LABELS.items()],
                          info="Real time resamples the driving video to 16 fps; every frame plays "
                          "a 30 fps clip about 1.9x slower, as the released code does.")
    with gr.Accordion("Start of the clip", open=False):
        align_to_reference = gr.Checkbox(label="Align the driving poses to the reference (limb lengths "
                                         "and position)", value=True)
        with gr.Row():
            smooth_start = gr.Checkbox(label="Smooth start from the reference's own pose", value=False)
            smooth_start_frames = gr.Slider(label="Smooth-start frames", step=1, value=DEFAULT_SMOOTH_START_FRAMES,
                                            **fields["smooth_start_frames"].range)
        auto_start = gr.Checkbox(label="Automatic start frame (the driving frame closest to the "
                                 "reference's pose, within the first 2 s)", value=False)
    with gr.Accordion("Advanced", open=False):
        negative_prompt = gr.Textbox(label="Negative prompt (empty: the released default)", lines=3,
                                     value="", placeholder=DEFAULT_NEGATIVE_PROMPT,
                                     max_length=config.limits.max_prompt_chars)
        with gr.Row():
            guidance_scale = gr.Slider(label="Text guidance scale (custom speed)", step=0.1,
                                       value=defaults.guidance_scale, **fields["guidance_scale"].range)
            pose_guidance_scale = gr.Slider(label="Pose guidance scale", step=0.1,
                                            value=defaults.pose_guidance_scale,
                                            **fields["pose_guidance_scale"].range)
        with gr.Row():
            window_start = gr.Slider(label="Pose guidance from (fraction of steps)", step=0.05,
                                     value=defaults.pose_guidance_window[0], **fields["window_start"].range)
            window_end = gr.Slider(label="Pose guidance until", step=0.05,
                                   value=defaults.pose_guidance_window[1], **fields["window_end"].range)
        with gr.Row():
            steps = gr.Slider(label="Steps (custom speed)", step=1, value=min(defaults.num_inference_steps,
                                                               config.limits.max_steps), **fields["steps"].range)
            shift = gr.Slider(label="Shift (5 at 1024x576, 3 at 832x480)", step=0.5,
                              value=shift_for(default_resolution), **fields["shift"].range)
        with gr.Row():
            seed = gr.Number(label="Seed", value=example_seed, precision=0, **fields["seed"].range)
            randomize_seed = gr.Checkbox(label="Randomise seed", value=True)
        fidelity = gr.Radio(label="Behaviour", value="default",
                            choices=[(label, key) for key, label in FIDELITY_LABELS.items()],
                            info="The released command line: every driving frame, lost poses black, the "
                            "released alignment arithmetic, the clip from the align frame, its guidance "
                            "(these settings then replace the ones above).")
    preset = gr.Radio(label="Speed", value=DEFAULT_PRESET,
                      choices=[(label, key) for key, label in PRESET_LABELS.items()],
                      info="Fast: about a minute of GPU (4 steps, pose guidance kept). Quality: the "
                      "paper's 40 steps, about 20x the GPU time.")
    estimate_md = gr.Markdown(label="GPU estimate")
    with gr.Row():
        extract_btn = gr.Button("Extract poses", variant="secondary")
        animate_btn = gr.Button("Animate", variant="primary")
        cancel_btn = gr.Button("Cancel", variant="stop")
    return _blocks(locals())


def _output_column(tiny: bool) -> dict:
    def _tiny(label: str) -> str:
        return f"{label} (TINY MODE: noise)" if tiny else label

    with gr.Row():
        alignment = gr.Image(label=_tiny("Reference + first aligned pose"), type="filepath", height=420,
                             interactive=False)
        pose_video = gr.Video(label=_tiny("Pose video"), height=300, interactive=False)
    pose_report = gr.Markdown(label="Pose report")
    pose_editor, pose_edits = build_pose_editor()
    with gr.Accordion("Negative poses and keypoints", open=False):
        negative_pose_video = gr.Video(label=_tiny("Negative poses (pose guidance)"), height=240,
                                       interactive=False)
        poses_json = gr.File(label=_tiny("Driving keypoints (JSON, reusable as input)"), interactive=False)
    preview = gr.Image(label=_tiny("Preview while it runs (the video each step predicts, 4 frames)"),
                       height=160, interactive=False, show_label=True)
    result = gr.Video(label=_tiny("Result"), height=420, interactive=False, autoplay=True)
    with gr.Row():
        seed_used = gr.Number(label=_tiny("Seed used"), value=None, precision=0, interactive=False)
    result_report = gr.Markdown(label="Report")
    with gr.Accordion("Side by side and recipe", open=False):
        side_by_side = gr.Video(label=_tiny("Photo, poses and result"), height=300, interactive=False)
        recipe = gr.JSON(label="Recipe (the API values that make this video again)")
    with gr.Accordion("Your results in this session", open=True):
        history = gr.State([])  # per browser session: one visitor never sees another's
        history_gallery = gr.Gallery(label="History (click one to see it again)", columns=4, height=220,
                                     allow_preview=False, interactive=False)
        with gr.Row():
            history_video = gr.Video(label="Selected result", height=260, interactive=False)
            history_recipe = gr.JSON(label="Its recipe")
    return _blocks(locals())
