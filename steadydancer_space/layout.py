"""The page's components and their layout (no events: `app.py` wires those to its handlers)."""

from types import SimpleNamespace

import gradio as gr

from .examples import DEMO_MEDIA, EXAMPLES
from .page import frames_to_seconds
from .pose_editor import build_pose_editor
from .request import (
    DEFAULT_PRESET,
    DEFAULT_PROMPT,
    DEFAULT_SMOOTH_START_FRAMES,
    FIDELITY_LABELS,
    MOTION_LABELS,
    RESOLUTION_LABELS,
    SamplerOptions,
    shift_for,
)
from .runtime import TINY_NOTICE

# What the speed choice shows (the values sent stay the preset names `request` checks).
SPEED_CHOICES = (("Fast", "fast"), ("Quality (about 20x the GPU time)", "quality"),
                 ("Custom (the steps below)", "custom"))
NEGATIVE_PROMPT_HINT = "Empty: the released default, a list of defects to avoid (written in Chinese)"
# Keeps the first screen compact: smaller gaps, the gallery's captions on one line.
CSS = """
#intro p {margin: 0}
#tiny-banner h2 {font-size: 1rem; margin: 0}
#tiny-banner p {margin: 0}
#examples .caption-label {white-space: nowrap; overflow: hidden; text-overflow: ellipsis}
"""
# On a phone the columns stack and Animate would sit two screens down, so its buttons stay at the bottom of the screen
# until the page reaches them: the row around them dissolves, so they stick within the whole column. In `head`, not
# `css`: Gradio scopes `css` inside `.gradio-container`, whose `overflow: hidden` stops anything inside from sticking
# (`clip` clips as well without being a scroll container).
HEAD = """<style>
@media (max-width: 640px) {
  .gradio-container {overflow: clip !important}
  #speed-row {display: contents}
  #actions {position: sticky; bottom: 0; z-index: 20; padding: 8px 0; background: var(--body-background-fill)}
}
</style>"""


def build_layout(config, fields: dict, tiny: bool, default_resolution: str, default_frames: int,
                 example_seed: int, examples_dir: str) -> tuple[gr.Blocks, SimpleNamespace]:
    """(the Blocks, its components by name); `fields`: the numeric API parameters, whose ranges the sliders take;
    `examples_dir`: where the examples' files (and their moving thumbnails) are."""

    # delete_cache: uploads and outputs (copied into Gradio's cache) are deleted once older than config.file_ttl.
    with gr.Blocks(title="SteadyDancer", delete_cache=config.delete_cache) as demo:
        gr.Markdown(
            "## SteadyDancer: make a photo of a person dance\n"
            "Give a photo and a motion (a video of someone moving, or keypoints); **Animate** makes a video of your "
            "photo moving like that. Its first frame is your photo, exactly.", elem_id="intro")
        if tiny:
            gr.Markdown(f"## ⚠️ {TINY_NOTICE}\nThis instance runs tiny random weights on a CPU to test the app: "
                        "every output it makes is noise.", elem_id="tiny-banner")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=340):
                inputs = _input_column(config, fields, tiny, default_resolution, default_frames, example_seed,
                                       examples_dir)
            with gr.Column(scale=2, min_width=340):
                outputs = _output_column(tiny, examples_dir)
    return demo, SimpleNamespace(**inputs, **outputs)


def _blocks(names: dict) -> dict:
    return {name: value for name, value in names.items() if isinstance(value, gr.blocks.Block)}


def _input_column(config, fields: dict, tiny: bool, default_resolution: str, default_frames: int,
                  example_seed: int, examples_dir: str) -> dict:
    import os

    example_gallery = gr.Gallery(
        value=[(os.path.join(examples_dir, e.thumbnail), e.label) for e in EXAMPLES],
        label="Examples: click one to try it (each shows its photo beside the motion it is given)",
        columns=len(EXAMPLES), height=200, allow_preview=False, interactive=False, object_fit="contain",
        elem_id="examples")
    example_name = gr.State(None)
    with gr.Row(equal_height=True):
        # image_mode=None: Gradio passes the upload on as is (our loader applies EXIF and transparency).
        reference = gr.Image(label="Photo of a person", type="filepath", height=250, image_mode=None)
        with gr.Tabs(selected="video") as motion_tabs:
            with gr.Tab("Motion: video", id="video"):
                driving_video = gr.Video(label="Driving video", height=210)
            with gr.Tab("Motion: keypoints", id="keypoints"):
                keypoints = gr.File(label="Keypoint JSON (used instead of the video when given)",
                                    file_types=[".json"], type="filepath", height=210)
    with gr.Row(equal_height=True, elem_id="speed-row"):
        preset = gr.Radio(label="Speed", value=DEFAULT_PRESET, choices=list(SPEED_CHOICES), scale=3, elem_id="speed",
                          info="Fast takes 4 steps with a speed-up add-on (a distillation LoRA); Quality, the "
                          "paper's 40 steps.")
        with gr.Column(scale=2, min_width=160, elem_id="actions"):
            animate_btn = gr.Button("Animate", variant="primary")
            with gr.Row():
                extract_btn = gr.Button("Extract poses", variant="secondary", size="sm", min_width=80)
                cancel_btn = gr.Button("Cancel", variant="stop", size="sm", interactive=False, min_width=80)
    estimate_md = gr.Markdown(label="GPU estimate", elem_id="estimate")
    prompt = gr.Textbox(label="Prompt (what the video shows)", value=DEFAULT_PROMPT, lines=1,
                        max_length=config.limits.max_prompt_chars)
    with gr.Row():
        num_frames = gr.Slider(label="Length (frames)", step=4, value=default_frames,
                               info=f"16 a second, rounded to a count the model takes (1, 5, 9, ...); more than "
                               f"{config.window_frames} are made in parts.", **fields["num_frames"].range)
        seconds = gr.Number(label="Length (seconds)", value=frames_to_seconds(default_frames), precision=2,
                            step=0.25, info="Typed values are rounded to the nearest length it can make.")
    with gr.Row():
        resolution = gr.Dropdown(label="Resolution", value=default_resolution,
                                 choices=[(label, key) for key, label in RESOLUTION_LABELS.items()],
                                 info="Pixels in the video; your photo's shape is kept."
                                 + (" Tiny mode caps it." if tiny else ""))
        motion = gr.Radio(label="Motion speed", value="real_time",
                          choices=[(label, key) for key, label in MOTION_LABELS.items()],
                          info="Real time keeps the clip's speed; every frame plays a 30 fps clip about 1.9x "
                          "slower, as the released code does.")
    with gr.Accordion("The detector can't find the person?", open=False) as reference_keypoints_box:
        reference_keypoints = gr.File(
            label="Photo's keypoints (JSON, one frame of the keypoint format)", file_types=[".json"],
            type="filepath")
        gr.Markdown("Replaces the detection on the photo; a new photo clears it.")
    with gr.Accordion("Start of the clip", open=False):
        align_to_reference = gr.Checkbox(label="Fit the motion to the photo", value=True,
                                         info="Scales limbs and position to the person in the photo.")
        with gr.Row():
            smooth_start = gr.Checkbox(label="Smooth start", value=False,
                                       info="Begin from the photo's own pose and move into the motion.")
            smooth_start_frames = gr.Slider(label="Smooth-start frames", step=1, value=DEFAULT_SMOOTH_START_FRAMES,
                                            info="How many frames the move into the motion takes.",
                                            **fields["smooth_start_frames"].range)
        auto_start = gr.Checkbox(label="Pick the start frame for me", value=False,
                                 info="Starts at the moment of the motion closest to the photo's pose (first 2 s).")
    advanced = _advanced(config, fields, default_resolution, example_seed)
    return {**_blocks(locals()), **advanced}



def _advanced(config, fields: dict, default_resolution: str, example_seed: int) -> dict:
    """The folded settings: negative prompt, guidance, steps, noise schedule, seed, behaviour."""
    defaults = SamplerOptions()
    with gr.Accordion("Advanced", open=False):
        negative_prompt = gr.Textbox(label="What to avoid (negative prompt)", lines=2, value="",
                                     placeholder=NEGATIVE_PROMPT_HINT, max_length=config.limits.max_prompt_chars,
                                     info="Things the video should not show.")
        with gr.Row():
            guidance_scale = gr.Slider(label="Follow the prompt (custom speed only)", step=0.1,
                                       value=defaults.guidance_scale, info="Higher sticks closer to the prompt "
                                       "(text guidance scale).", **fields["guidance_scale"].range)
            pose_guidance_scale = gr.Slider(label="Follow the poses", step=0.1, value=defaults.pose_guidance_scale,
                                            info="Higher sticks closer to the motion (pose guidance scale; 0 "
                                            "turns it off).", **fields["pose_guidance_scale"].range)
        with gr.Row():
            window_start = gr.Slider(label="Follow the poses from", step=0.05,
                                     value=defaults.pose_guidance_window[0], info="Share of the steps where the "
                                     "pose push starts (pose guidance window).", **fields["window_start"].range)
            window_end = gr.Slider(label="Follow the poses until", step=0.05, value=defaults.pose_guidance_window[1],
                                   info="Share of the steps where it stops.", **fields["window_end"].range)
        with gr.Row():
            steps = gr.Slider(label="Steps (custom speed only)", step=1, value=min(defaults.num_inference_steps,
                              config.limits.max_steps), info="More steps: more detail, more GPU time.",
                              **fields["steps"].range)
            shift = gr.Slider(label="Noise schedule", step=0.5, value=shift_for(default_resolution),
                              info="Called shift: 5 at 576p and above, 3 at 480p, as released.",
                              **fields["shift"].range)
        with gr.Row():
            seed = gr.Number(label="Seed", value=example_seed, precision=0, info="The same seed and settings "
                             "make the same video.", **fields["seed"].range)
            randomize_seed = gr.Checkbox(label="New seed each time", value=True,
                                         info="Off: the seed above is used.")
        fidelity = gr.Radio(label="Behaviour", value="default",
                            choices=[(label, key) for key, label in FIDELITY_LABELS.items()],
                            info="The released command line uses every driving frame and its own settings, "
                            "replacing the ones above.")
    return _blocks(locals())

def _output_column(tiny: bool, examples_dir: str) -> dict:
    import os

    def _tiny(label: str) -> str:
        return f"{label} (TINY MODE: noise)" if tiny else label

    demo_media = gr.Image(value=os.path.join(examples_dir, DEMO_MEDIA), type="filepath", height=300,
                          interactive=False, buttons=[], label="How it works: a photo and a motion go in (here the "
                          "first example's); Animate makes the photo move like the skeleton")
    preview = gr.Image(label=_tiny("Preview while it runs (the video each step predicts, 4 frames)"),
                       height=140, interactive=False, show_label=True, visible=True)
    result = gr.Video(label=_tiny("Result"), height=380, interactive=False, autoplay=True, loop=True)
    with gr.Row(equal_height=True):
        # Hidden until a result is there: a number box would show 0 before any run.
        seed_used = gr.Number(label=_tiny("Seed used"), value=None, precision=0, interactive=False, min_width=100,
                              visible=False)
        reuse_result = gr.Button("Use these settings", size="sm", interactive=False)
        download_result = gr.DownloadButton("Download all (zip)", size="sm", interactive=False)
    result_report = gr.Markdown(label="Report")
    with gr.Accordion("Side by side and recipe", open=False):
        side_by_side = gr.Video(label=_tiny("Photo, poses and result"), height=300, interactive=False)
        recipe = gr.JSON(label="Recipe (the API values that make this video again)")
    with gr.Accordion("Poses: check the motion before spending GPU time", open=False) as poses_box:
        with gr.Row():
            alignment = gr.Image(label=_tiny("Reference + first aligned pose"), type="filepath", height=300,
                                 interactive=False)
            pose_video = gr.Video(label=_tiny("Pose video"), height=300, interactive=False)
        pose_report = gr.Markdown(label="Pose report")
        pose_editor, pose_edits, pose_fit = build_pose_editor()
        negative_pose_video = gr.Video(label=_tiny("Negative poses (pose guidance)"), height=240,
                                       interactive=False)
        poses_json = gr.File(label=_tiny("Driving keypoints (JSON, reusable as input)"), interactive=False)
    with gr.Accordion("Your results in this session", open=True):
        history = gr.State([])  # per browser session: one visitor never sees another's
        job_files = gr.State(None)  # the files of the job running now, for its history entry
        history_selected = gr.State(None)
        history_gallery = gr.Gallery(label="History (click one to see it again)", columns=4, height=200,
                                     allow_preview=False, interactive=False)
        with gr.Row():
            history_video = gr.Video(label="Selected result", height=240, interactive=False)
            history_recipe = gr.JSON(label="Its recipe")
        with gr.Row():
            reuse_history = gr.Button("Use these settings", size="sm", interactive=False)
            download_history = gr.DownloadButton("Download all (zip)", size="sm", interactive=False)
    return _blocks(locals())
