"""SteadyDancer Space: animate a photo of a person with the motion of a driving video (or a keypoint JSON).

    python app.py                 # the real model from the Hub, on a GPU (ZeroGPU, A100/H100, ...)
    python app.py --tiny          # tiny random weights + stand-in poses: runs on a CPU, the output is noise
    python app.py --help          # every setting; each has a STEADYDANCER_* environment variable

Host and port: GRADIO_SERVER_NAME, GRADIO_SERVER_PORT. This file is the UI wiring: components, events and the
`spaces.GPU` wrapper. Handlers turn UI values into a request (`steadydancer_space.request`) and the service
(`steadydancer_space.service`) runs the steps. The models load at import time (ZeroGPU moves them to its GPU when a
task starts) and only the generation itself runs under `spaces.GPU`, with a duration computed from the request.
"""

import sys

try:  # ZeroGPU: `spaces` must come before torch. Elsewhere its decorator is a no-op, and it is optional.
    import spaces
except ImportError:
    spaces = None

from steadydancer_space.config import AppConfig, ConfigError, apply_environment, parse_config

try:
    CONFIG = parse_config(sys.argv[1:]) if __name__ == "__main__" else AppConfig.from_env()
except ConfigError as error:
    print(f"steadydancer: {error}", file=sys.stderr)
    sys.exit(2)
apply_environment(CONFIG)

import asyncio  # noqa: E402
import atexit  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import uuid  # noqa: E402

import gradio as gr  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from steadydancer.defaults import DEFAULT_NEGATIVE_PROMPT, OUTPUT_FPS, PRESETS  # noqa: E402
from steadydancer.sizing import nearest_valid_frame_count  # noqa: E402
from steadydancer_space.estimate import format_seconds  # noqa: E402
from steadydancer_space.examples import EXAMPLES  # noqa: E402
from steadydancer_space.guard import (  # noqa: E402
    CancelListener,
    MissingArgumentDefaults,
    pass_through_inputs,
    publish,
    user_errors,
)
from steadydancer_space.poses import FAKE_POSES_NOTE  # noqa: E402
from steadydancer_space.request import (  # noqa: E402
    DEFAULT_PRESET,
    DEFAULT_PROMPT,
    PRESET_LABELS,
    DEFAULT_SMOOTH_START_FRAMES,
    FIDELITY_LABELS,
    MAX_SEED,
    MOTION_LABELS,
    RESOLUTION_LABELS,
    SamplerOptions,
    shift_for,
)
from steadydancer_space.runtime import TINY_NOTICE, ModelLoadError, load_runtime  # noqa: E402
from steadydancer_space.service import AnimationService  # noqa: E402
from steadydancer_space.uploads import InputError  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES_DIR = os.path.join(HERE, "examples")
# Served from examples/ as they are, never copied into Gradio's temp folder: copies there are swept after the file
# time-to-live, or at once when another instance sharing the folder stops, and a loaded example would then point at
# a deleted file.
gr.set_static_paths([EXAMPLES_DIR])
EXAMPLE_SEED = 42
MAX_HISTORY = 12
PREVIEW_POLL_SECONDS = 0.5

try:
    RUNTIME = load_runtime(CONFIG)
except ModelLoadError as error:
    print(f"\n{error}\n", file=sys.stderr)
    sys.exit(2)
SERVICE = AnimationService(RUNTIME, output_max_age=CONFIG.file_ttl)
FIELDS = SERVICE.fields
# On ZeroGPU the defaults (and the examples) fit the per-call cap with a margin, with the fast preset.
DEFAULT_RESOLUTION, DEFAULT_FRAMES = SERVICE.default_choices()
print(f"SteadyDancer app: {'TINY (noise) ' if RUNTIME.tiny else ''}models loaded in {RUNTIME.load_seconds:.1f} s "
      f"on {RUNTIME.device}; GPU estimates for {SERVICE.gpu}.", flush=True)


# ---------------------------------------------------------------------- GPU part
def gpu_task(duration):
    """`spaces.GPU(duration=...)` on ZeroGPU; elsewhere the function itself."""
    if spaces is None:
        return lambda fn: fn
    size = {"size": CONFIG.zerogpu_size} if CONFIG.zerogpu_size else {}
    return spaces.GPU(duration=duration, **size)


def _window_seconds(job_id, index, state, sampler, progress=None):
    return SERVICE.window_seconds(job_id, sampler)


@gpu_task(duration=_window_seconds)
def generate_window_on_gpu(job_id, index, state, sampler, progress=None):
    """One window of a long video, its own GPU call: what it carries to the next window comes back with its frames."""
    return SERVICE.generate_window(job_id, index, state, sampler)


def _gpu_seconds(reference, poses, sampler, job_id, preview_dir=None, progress=None):
    frames, _, height, width = poses.pose_video.shape
    return SERVICE.estimate(frames, height, width, sampler).seconds


@gpu_task(duration=_gpu_seconds)
def generate_on_gpu(reference, poses, sampler, job_id, preview_dir=None, progress=None):
    """Arrays in, uint8 frames out: what ZeroGPU ships to its GPU worker and back. Out-of-memory errors and
    cancellations free the GPU memory here, in the GPU worker, and reach the visitor through `user_errors`."""
    return SERVICE.generate_frames(reference, poses, sampler, job_id, _reporter(progress), preview_dir)


# ---------------------------------------------------------------------- handlers
def _api_values(local_values: dict) -> dict:
    """A handler's API parameters by name (its `locals()` at entry, without Gradio's injected arguments)."""
    return {k: v for k, v in local_values.items() if k not in ("request", "progress")}


def _reporter(progress):
    """The service's progress(done, total, description) shown on a Gradio progress bar."""
    if progress is None:
        return None

    def report(done, total, desc):
        unit = "frames" if desc.startswith("Detecting") else "steps"
        progress((done, total) if total else None, desc=desc, unit=unit)

    return report


def _warn(note: str) -> None:
    """The pose step's warnings (lost person, several people, padded ending) as toasts too; they are in the report."""
    if note != FAKE_POSES_NOTE:
        gr.Warning(note)


@user_errors
def extract_poses(reference, driving_video, keypoints, resolution, num_frames, motion, align_to_reference,
                  smooth_start, smooth_start_frames, auto_start, fidelity="default", reference_keypoints=None,
                  progress=gr.Progress()):
    """Detects and aligns the poses (CPU only). Returns the pose video, the reference with the first aligned pose
    drawn over it, a report with warnings, the negative pose video and the raw driving keypoints (JSON)."""
    job = SERVICE.request(**_api_values(locals()))
    with SERVICE.workspace() as work:  # deleted on the way out; the outputs go to Gradio's cache first
        result = SERVICE.extract(job, _reporter(progress), work)
        for note in result.step.warnings:
            _warn(note)
        return (publish(result.pose_video), publish(result.alignment_image), result.report,
                publish(result.negative_pose_video), publish(result.poses_json))


async def _animate(job, request: gr.Request, progress):
    """Runs one animation job in a worker thread, yielding a preview of the video each denoising step predicts
    while it runs, then the outputs. Gradio's cancel stops it after the current step."""
    session = getattr(request, "session_hash", None) or "local"
    job_id = f"{session}-{uuid.uuid4().hex[:8]}"
    SERVICE.cancels.start(job_id, session)
    work = SERVICE.new_output_dir()  # deleted when the job ends (success, error, OOM or cancel)

    def run_on_gpu(reference, poses, sampler, job_id):
        return generate_on_gpu(reference, poses, sampler, job_id, work, progress)

    def run():
        try:
            result = SERVICE.animate(job, job_id, run_on_gpu, work, _reporter(progress), _warn,
                                     run_window_on_gpu=generate_window_on_gpu)
            return (publish(result.video), publish(result.pose_video), result.seed, result.report,
                    publish(result.side_by_side), result.recipe)
        finally:  # in the worker thread: a cancelled request's step is still running until here
            SERVICE.cancels.finish(job_id)
            shutil.rmtree(work, ignore_errors=True)

    task = asyncio.ensure_future(asyncio.to_thread(run))
    shown = preview = None
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=PREVIEW_POLL_SECONDS)
            latest = SERVICE.latest_preview(work)
            if latest and latest != shown:
                with contextlib.suppress(OSError):  # the job may have ended and taken its folder with it
                    preview, shown = publish(latest), latest
                    yield (gr.skip(),) * 6 + (preview,)
        yield (*task.result(), preview)
    except asyncio.CancelledError:  # Gradio's cancel (Stop button, client.cancel()): stop after the current step
        SERVICE.interrupt(job_id)
        raise


@user_errors
async def animate(reference, driving_video, keypoints, prompt, negative_prompt, resolution, num_frames, motion,
                  align_to_reference, smooth_start, smooth_start_frames, auto_start, guidance_scale,
                  pose_guidance_scale, window_start, window_end, steps, shift, seed, randomize_seed,
                  fidelity="default", preset=DEFAULT_PRESET, reference_keypoints=None, request: gr.Request = None,
                  progress=gr.Progress()):
    """Animates the reference with the driving motion. Returns the video (H.264 mp4, 16 fps, with the driving video's
    audio when it has some), the pose video, the seed used, a report, the side-by-side video (photo, poses, result)
    and the recipe: the API values that make the same video again."""
    job = SERVICE.request(**_api_values(locals()), random_seed=lambda: random.randint(0, MAX_SEED))
    async for outputs in _animate(job, request, progress):
        yield outputs


@user_errors
async def animate_example(example_name, reference, driving_video, keypoints, reference_keypoints, prompt, num_frames,
                          request: gr.Request = None, progress=gr.Progress()):
    """An example's result (cached lazily). Its files are read from examples/, not from the copies Gradio's cache
    holds (those are swept after the file time-to-live, or when another instance sharing the folder stops)."""
    example = next(e for e in EXAMPLES if e.label == example_name)
    reference, driving_video, keypoints, reference_keypoints = example_files(example)
    job = SERVICE.request(reference, driving_video, keypoints, reference_keypoints=reference_keypoints,
                          prompt=example.prompt, num_frames=min(example.num_frames, DEFAULT_FRAMES),
                          resolution=DEFAULT_RESOLUTION, seed=EXAMPLE_SEED)
    async for outputs in _animate(job, request, progress):
        yield outputs


def example_files(example):
    """An example's files in examples/: reference, driving video, keypoints, reference keypoints (None: absent)."""
    return tuple(os.path.join(EXAMPLES_DIR, name) if name else None
                 for name in (example.reference, example.video, example.keypoints, example.reference_keypoints))


def clear_result():
    return None, None, "", None, None, None


def add_to_history(history, video, seed, recipe):
    """This visitor's results (a `gr.State`: never shared between sessions), newest first. Entries whose files
    Gradio's cache has swept (after the file time-to-live) are dropped."""
    history = [entry for entry in history or [] if os.path.exists(entry["video"])]
    if video:
        history.insert(0, {"video": video, "thumbnail": SERVICE.thumbnail(video), "seed": seed,
                           "recipe": recipe})
    del history[MAX_HISTORY:]
    return history, [(e["thumbnail"], history_caption(e)) for e in history]


def history_caption(entry) -> str:
    recipe = entry["recipe"] or {}
    return f"seed {entry['seed']} · {recipe.get('steps')} steps · {recipe.get('resolution')} · {recipe.get('num_frames')} frames"


def show_history_entry(history, selected: gr.SelectData):
    entry = (history or [])[selected.index] if selected.index < len(history or []) else None
    return (entry["video"], entry["recipe"]) if entry and os.path.exists(entry["video"]) else (None, None)


def cancel_session(session: str, event_id: str | None = None) -> None:
    """A cancel from `session` (seen by `guard.CancelListener` on Gradio's /cancel route). Gradio stops the session's
    running animation task itself; a job of the session still waiting in the queue is dropped here, and one that has
    not reached the server yet (a cancel sent right after the submit, naming no event) is cancelled when it starts."""
    waiting = getattr(getattr(demo, "_queue", None), "event_queue_per_concurrency_id", {})
    dropped = False
    for event_queue in list(waiting.values()):
        for event in list(event_queue.queue):
            if event.session_hash == session and getattr(event.fn, "name", None) == animate.__name__:
                with contextlib.suppress(ValueError):
                    event_queue.queue.remove(event)
                    dropped = True
    # Remembered for the session's next job only when it named no event and none was waiting to drop: otherwise
    # this cancel has found its job, and keeping it would cancel the visitor's next Animate.
    SERVICE.cancels.cancel_session(session, early=event_id is None and not dropped)
    print(f"steadydancer: cancel from session {session[:8]}", flush=True)


def cancelled_note():
    return "**Cancelled.** Nothing was made; change the settings and press Animate again."


def show_motion_source(kind: str):
    """The change handler of one motion input: when it gets a file, the other input is cleared and its tab shown."""

    def show(value):
        if not value:
            return gr.skip(), gr.skip()
        return None, gr.Tabs(selected=kind)

    return show


def estimate(reference, resolution, num_frames, steps, guidance_scale, pose_guidance_scale, window_start,
             window_end, preset=DEFAULT_PRESET):
    """The GPU time a generation with these settings needs (markdown). Uses the reference's aspect when given."""
    try:
        job = SERVICE.request(**_api_values(locals()))
        e, height, width = SERVICE.estimate_request(job)
    except InputError as error:  # shown in place while the visitor is still choosing
        return f"Estimate unavailable: {error}"
    text = SERVICE.describe_estimate(job.pose.num_frames, height, width, e)
    if RUNTIME.tiny:
        text += " (For the real model; tiny mode runs on the CPU at a capped size.)"
    if SERVICE.over_limit(e):
        text += f" Over this app's limit of {format_seconds(SERVICE.max_gpu_seconds)}."
    return text


def tiny_stats() -> dict:
    """Tiny mode only (tests): the GPU part's counters, live request workspaces, pending faults, queue settings."""
    return {**SERVICE.stats.snapshot(), "workspaces": SERVICE.live_workspaces(), "faults": SERVICE.faults.describe(),
            "queue_size": CONFIG.queue_size, "concurrency": CONFIG.concurrency}


def preset_sliders(name):
    if name not in PRESETS:  # "custom": the sliders stay as they are
        return gr.skip(), gr.skip()
    settings = PRESETS[name].settings
    return settings.num_inference_steps, settings.guidance_scale


def frames_to_seconds(num_frames):
    return round(int(num_frames) / OUTPUT_FPS, 2)


def seconds_to_frames(seconds):
    frames = nearest_valid_frame_count(int(round(float(seconds or 0) * OUTPUT_FPS)) + 1)
    frames = min(max(frames, int(FIELDS["num_frames"].minimum)), CONFIG.max_frames)
    return frames, frames_to_seconds(frames)


# ---------------------------------------------------------------------- UI
def _tiny(label: str) -> str:
    return f"{label} (TINY MODE: noise)" if RUNTIME.tiny else label


def build_demo() -> gr.Blocks:
    defaults = SamplerOptions()
    # delete_cache: uploads and outputs (copied into Gradio's cache) are deleted once older than CONFIG.file_ttl.
    with gr.Blocks(title="SteadyDancer", delete_cache=CONFIG.delete_cache) as demo:
        gr.Markdown(
            "# SteadyDancer: animate a photo with the motion of a video\n"
            "Upload a photo of a person and a driving video (or a keypoint JSON). **Extract poses** shows the motion "
            "aligned to your photo before any GPU time is spent; **Animate** makes the video. The first frame is "
            "your photo, exactly."
        )
        if RUNTIME.tiny:
            gr.Markdown(f"## ⚠️ {TINY_NOTICE}\nThis instance runs tiny random weights on a CPU to test the app. "
                        "Every output it makes is noise.", elem_id="tiny-banner")
        with gr.Row():
            with gr.Column(scale=1):
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
                                    max_length=CONFIG.limits.max_prompt_chars)
                with gr.Row():
                    default_frames = DEFAULT_FRAMES
                    num_frames = gr.Slider(label=f"Length (frames, 4n+1; above {CONFIG.window_frames}: in windows)",
                                           step=4, value=default_frames,
                                           **_range("num_frames"))
                    seconds = gr.Number(label="Length (seconds at 16 fps)", value=frames_to_seconds(default_frames),
                                        precision=2, minimum=0.25, step=0.25)
                with gr.Row():
                    resolution = gr.Dropdown(label="Resolution", value=DEFAULT_RESOLUTION,
                                             choices=[(label, key) for key, label in RESOLUTION_LABELS.items()],
                                             info="Pixel budget; the reference's aspect ratio is kept."
                                             + (" Tiny mode caps it." if RUNTIME.tiny else ""))
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
                                                        **_range("smooth_start_frames"))
                    auto_start = gr.Checkbox(label="Automatic start frame (the driving frame closest to the "
                                             "reference's pose, within the first 2 s)", value=False)
                with gr.Accordion("Advanced", open=False):
                    negative_prompt = gr.Textbox(label="Negative prompt (empty: the released default)", lines=3,
                                                 value="", placeholder=DEFAULT_NEGATIVE_PROMPT,
                                                 max_length=CONFIG.limits.max_prompt_chars)
                    with gr.Row():
                        guidance_scale = gr.Slider(label="Text guidance scale (custom speed)", step=0.1,
                                                   value=defaults.guidance_scale, **_range("guidance_scale"))
                        pose_guidance_scale = gr.Slider(label="Pose guidance scale", step=0.1,
                                                        value=defaults.pose_guidance_scale,
                                                        **_range("pose_guidance_scale"))
                    with gr.Row():
                        window_start = gr.Slider(label="Pose guidance from (fraction of steps)", step=0.05,
                                                 value=defaults.pose_guidance_window[0], **_range("window_start"))
                        window_end = gr.Slider(label="Pose guidance until", step=0.05,
                                               value=defaults.pose_guidance_window[1], **_range("window_end"))
                    with gr.Row():
                        steps = gr.Slider(label="Steps (custom speed)", step=1, value=min(defaults.num_inference_steps,
                                                                           CONFIG.limits.max_steps), **_range("steps"))
                        shift = gr.Slider(label="Shift (5 at 1024x576, 3 at 832x480)", step=0.5,
                                          value=shift_for(DEFAULT_RESOLUTION), **_range("shift"))
                    with gr.Row():
                        seed = gr.Number(label="Seed", value=EXAMPLE_SEED, precision=0, **_range("seed"))
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
            with gr.Column(scale=1):
                with gr.Row():
                    alignment = gr.Image(label=_tiny("Reference + first aligned pose"), type="filepath", height=420,
                                         interactive=False)
                    pose_video = gr.Video(label=_tiny("Pose video"), height=300, interactive=False)
                pose_report = gr.Markdown(label="Pose report")
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

        # Every value a request brings is checked on the server, named by its API parameter (see `guard`).
        # New API parameters go at the end, so scripts passing values by position keep working.
        pose_inputs = [reference, driving_video, keypoints, resolution, num_frames, motion, align_to_reference,
                       smooth_start, smooth_start_frames, auto_start, fidelity, reference_keypoints]
        extract_btn.click(
            extract_poses, pose_inputs, [pose_video, alignment, pose_report, negative_pose_video, poses_json],
            api_name="extract_poses", concurrency_limit=2, concurrency_id="poses", show_progress_on=[pose_video],
        )
        animate_inputs = [reference, driving_video, keypoints, prompt, negative_prompt, resolution, num_frames,
                          motion, align_to_reference, smooth_start, smooth_start_frames, auto_start, guidance_scale,
                          pose_guidance_scale, window_start, window_end, steps, shift, seed, randomize_seed, fidelity,
                          preset, reference_keypoints]
        # The previous result is cleared first, so a cancelled or failed job never leaves it looking like the new one.
        animate_outputs = [result, pose_video, seed_used, result_report, side_by_side, recipe, preview]
        animate_event = animate_btn.click(
            clear_result, None, [result, seed_used, result_report, side_by_side, recipe, preview], queue=False,
            api_visibility="private",
        ).then(
            animate, animate_inputs, animate_outputs,
            api_name="animate", concurrency_limit=CONFIG.concurrency, concurrency_id="gpu", show_progress_on=[result],
        )
        animate_event.success(add_to_history, [history, result, seed_used, recipe], [history, history_gallery],
                              queue=False, api_visibility="private")
        history_gallery.select(show_history_entry, history, [history_video, history_recipe], queue=False,
                               api_visibility="private")
        cancel_btn.click(cancelled_note, None, result_report, cancels=[animate_event], queue=False,
                         api_visibility="private")
        # One source of motion at a time, shown in its tab: a video replaces a keypoint file and vice versa
        # (examples included), so a file left in the hidden tab never wins unseen.
        driving_video.change(show_motion_source("video"), driving_video, [keypoints, motion_tabs], queue=False,
                             api_visibility="private")
        keypoints.change(show_motion_source("keypoints"), keypoints, [driving_video, motion_tabs], queue=False,
                         api_visibility="private")
        # Keypoints belong to their photo: a new photo clears them; given ones are shown, never hidden in a closed box.
        reference.upload(lambda: None, None, reference_keypoints, queue=False, api_visibility="private")
        reference_keypoints.change(lambda value: gr.Accordion(open=bool(value)), reference_keypoints,
                                   reference_keypoints_box, queue=False, api_visibility="private")
        pass_through_inputs(animate_inputs)  # every value is validated once, by the request (see `guard`)

        estimate_inputs = [reference, resolution, num_frames, steps, guidance_scale, pose_guidance_scale,
                           window_start, window_end, preset]
        # A preset shows its steps and text guidance on the sliders; moving either slider makes the job "custom".
        preset.input(preset_sliders, preset, [steps, guidance_scale], queue=False, api_visibility="private")
        for slider in (steps, guidance_scale):
            slider.input(lambda: "custom", None, preset, queue=False, api_visibility="private")
        gr.on([demo.load] + [c.change for c in estimate_inputs], estimate, estimate_inputs, estimate_md,
              api_name="estimate", concurrency_limit=None, show_progress="hidden")  # instant: never waits
        # Frames drive seconds on any change (examples set them too); seconds drive frames on typing only.
        num_frames.change(frames_to_seconds, num_frames, seconds, queue=False, api_visibility="private")
        seconds.input(seconds_to_frames, seconds, [num_frames, seconds], queue=False, api_visibility="private")
        resolution.input(shift_for, resolution, shift, queue=False, api_visibility="private")

        example_name = gr.Textbox(visible=False)
        gr.Examples(
            examples=[[e.label, *example_files(e), e.prompt, e.num_frames] for e in EXAMPLES],
            inputs=[example_name, reference, driving_video, keypoints, reference_keypoints, prompt, num_frames],
            outputs=animate_outputs,
            fn=animate_example,
            cache_examples=True,
            cache_mode="lazy",
            label="Examples (drawn characters and dances made by examples/make_examples.py)",
            example_labels=[e.label for e in EXAMPLES],
            api_visibility="private",
        )
        if RUNTIME.tiny:  # counters for the reliability tests; never in real mode
            gr.api(tiny_stats, api_name="tiny_stats", queue=False, api_visibility="undocumented")
    return demo


def _range(name: str) -> dict:
    return FIELDS[name].range


demo = build_demo()
# What a call sending fewer values than an endpoint takes gets for the rest (`guard.MissingArgumentDefaults`): the
# page's own starting values, which are also what gradio_client fills in.
ENDPOINT_DEFAULTS = {key: [component.value for component in fn.inputs]
                     for fn_index, fn in demo.fns.items() if fn.api_name in ("animate", "extract_poses", "estimate")
                     for key in (fn_index, fn.api_name)}

if __name__ == "__main__":
    # A bounded queue (more waiting requests are refused with "Queue is full"), one event of each kind at a time
    # unless said otherwise (the GPU work: CONFIG.concurrency). Only the examples are served from disk besides what
    # the handlers return (copied into Gradio's cache); uploads beyond the file-size limit are refused by Gradio;
    # show_error=False: an unexpected error reaches the client without its text (handlers turn every expected one
    # into a gr.Error with a message, see steadydancer_space/guard.py).
    # On SIGTERM (a Space restarting, `kill`) shut down as on Ctrl+C, so Gradio deletes the files it tracks and this
    # process's own output and tiny-model directories go too.
    def stop(signum, frame):  # running generations end after their current step instead of holding the exit
        SERVICE.cancels.cancel_all()
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    atexit.register(shutil.rmtree, SERVICE.output_dir, ignore_errors=True)
    demo.queue(max_size=CONFIG.queue_size, default_concurrency_limit=1).launch(
        allowed_paths=[EXAMPLES_DIR], show_error=False, max_file_size=CONFIG.limits.max_file_bytes,
        app_kwargs={"middleware": [Middleware(CancelListener, on_cancel=cancel_session),
                                   Middleware(MissingArgumentDefaults, defaults=ENDPOINT_DEFAULTS.get)]})
