"""SteadyDancer Space: animate a photo of a person with the motion of a driving video (or a keypoint JSON).

    python app.py                 # the real model from the Hub, on a GPU (ZeroGPU, A100/H100, ...)
    python app.py --tiny          # tiny random weights + stand-in poses: runs on a CPU, the output is noise
    python app.py --help          # every setting; each has a STEADYDANCER_* environment variable

Host and port: GRADIO_SERVER_NAME, GRADIO_SERVER_PORT. The logic lives in `steadydancer/app_support/`; this file
maps the UI to it. The models load at import time (ZeroGPU moves them to its GPU when a task starts) and only the
generation itself runs under `spaces.GPU`, with a duration computed from the request.
"""

import os
import sys

try:  # ZeroGPU: `spaces` must come before torch. Elsewhere its decorator is a no-op, and it is optional.
    import spaces
except ImportError:
    spaces = None

from steadydancer_space.config import AppConfig, apply_environment, parse_config

CONFIG = parse_config(sys.argv[1:]) if __name__ == "__main__" else AppConfig.from_env()
apply_environment(CONFIG)

import asyncio  # noqa: E402
import atexit  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

import gradio as gr  # noqa: E402

from steadydancer_space.estimate import format_seconds  # noqa: E402
from steadydancer_space.examples import EXAMPLES  # noqa: E402
from steadydancer_space.guard import NumberField, harden_inputs, publish, user_errors  # noqa: E402
from steadydancer_space.poses import FAKE_POSES_NOTE, MOTION_CHOICES, MOTION_REAL_TIME, PoseSettings  # noqa: E402
from steadydancer_space.runtime import TINY_NOTICE, ModelLoadError, load_runtime  # noqa: E402
from steadydancer_space.service import DEFAULT_PROMPT, AnimationService, GenerationSettings  # noqa: E402
from steadydancer.pipeline_steadydancer import DEFAULT_NEGATIVE_PROMPT  # noqa: E402
from steadydancer.sizing import RESOLUTION_PRESETS, generation_size, nearest_valid_frame_count  # noqa: E402
from steadydancer_space.uploads import InputError, check_flag, check_prompt, check_reference_image  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES_DIR = os.path.join(HERE, "examples")
FPS = 16
MAX_SEED = 2**31 - 1
DEFAULT_RESOLUTION = "576p (1024x576, paper)"

try:
    RUNTIME = load_runtime(CONFIG)
except ModelLoadError as error:
    print(f"\n{error}\n", file=sys.stderr)
    sys.exit(2)
SERVICE = AnimationService(RUNTIME, output_max_age=CONFIG.file_ttl)
LIMITS = SERVICE.limits
print(f"SteadyDancer app: {'TINY (noise) ' if RUNTIME.tiny else ''}models loaded in {RUNTIME.load_seconds:.1f} s "
      f"on {RUNTIME.device}; GPU estimates for {SERVICE.gpu}.", flush=True)

# The numbers the API accepts, by parameter name. Gradio range-checks sliders with messages that name no field and
# lets NaN or text through, so these are checked on the server (`guard.harden_inputs` and the handlers); the UI's
# sliders use the same ranges.
FIELDS = {
    "num_frames": NumberField("num_frames", 5, CONFIG.max_frames, integer=True),
    "smooth_start_frames": NumberField("smooth_start_frames", 1, 32, integer=True),
    "guidance_scale": NumberField("guidance_scale", 1.0, 10.0),
    "pose_guidance_scale": NumberField("pose_guidance_scale", 0.0, 5.0),
    "window_start": NumberField("window_start", 0.0, 1.0),
    "window_end": NumberField("window_end", 0.0, 1.0),
    "steps": NumberField("steps", 1, LIMITS.max_steps, integer=True),
    "shift": NumberField("shift", 1.0, 10.0),
    "seed": NumberField("seed", 0, MAX_SEED, integer=True, optional=True),
}


# ---------------------------------------------------------------------- GPU part
def gpu_task(duration):
    """`spaces.GPU(duration=...)` on ZeroGPU; elsewhere the function itself."""
    if spaces is None:
        return lambda fn: fn
    size = {"size": CONFIG.zerogpu_size} if CONFIG.zerogpu_size else {}
    return spaces.GPU(duration=duration, **size)


def _gpu_seconds(reference, positive, negative, settings, job_id, progress=None):
    frames, height, width = positive.shape[:3]
    return SERVICE.estimate(frames, height, width, settings).seconds


@gpu_task(duration=_gpu_seconds)
def generate_on_gpu(reference, positive, negative, settings, job_id, progress=None):
    """Arrays in, uint8 frames out: what ZeroGPU ships to its GPU worker and back. Out-of-memory errors and
    cancellations free the GPU memory here, in the GPU worker, and reach the visitor through `user_errors`."""

    def report(step, total, desc):
        if progress is not None:
            progress((step, total), desc=desc, unit="steps")

    return SERVICE.generate_frames(reference, positive, negative, settings, job_id, report)


# ---------------------------------------------------------------------- handlers
def _choice(value, name, choices):
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}.")
    return value


def _pose_settings(resolution, num_frames, motion, align, smooth_start, smooth_frames, auto_start) -> PoseSettings:
    """The pose step's settings from request values, each checked (InputError naming the field)."""
    frames = FIELDS["num_frames"].check(num_frames)
    if (frames - 1) % 4:
        raise InputError(f"num_frames must be 4n+1 (5, 9, 13, ..., {CONFIG.max_frames}), got {num_frames!r}.")
    smooth = FIELDS["smooth_start_frames"].check(smooth_frames)
    resolution = _choice(resolution, "resolution", list(RESOLUTION_PRESETS))
    return PoseSettings(
        max_area=SERVICE.max_area(resolution),
        requested_area=SERVICE.requested_area(resolution),
        num_frames=frames,
        real_time=_choice(motion, "motion", list(MOTION_CHOICES)) == MOTION_REAL_TIME,
        align=check_flag(align, "align_to_reference"),
        smooth_start_frames=smooth if check_flag(smooth_start, "smooth_start") else 0,
        auto_start=check_flag(auto_start, "auto_start"),
    )


def _generation_settings(prompt, negative_prompt, guidance_scale, pose_guidance_scale, window_start, window_end,
                         steps, shift, seed) -> GenerationSettings:
    start, end = FIELDS["window_start"].check(window_start), FIELDS["window_end"].check(window_end)
    if start > end:
        raise InputError(f"pose_guidance_window: window_start ({start:g}) must not be after window_end ({end:g}).")
    return GenerationSettings(
        prompt=check_prompt(prompt, LIMITS, "prompt").strip() or DEFAULT_PROMPT,
        negative_prompt=check_prompt(negative_prompt, LIMITS, "negative prompt").strip() or None,
        guidance_scale=FIELDS["guidance_scale"].check(guidance_scale),
        pose_guidance_scale=FIELDS["pose_guidance_scale"].check(pose_guidance_scale),
        pose_guidance_window=(start, end),
        num_inference_steps=FIELDS["steps"].check(steps),
        shift=FIELDS["shift"].check(shift),
        seed=seed,
    )


def _warn(step) -> None:
    """The pose step's warnings (lost person, several people, padded ending) as toasts too; they are in the report."""
    for note in step.warnings:
        if note != FAKE_POSES_NOTE:
            gr.Warning(note)


def _detect_progress(progress):
    def report(done, total):
        of = f" of {total}" if total else ""
        progress((done, total) if total else None, desc=f"Detecting poses: frame {done}{of}", unit="frames")

    return report


@user_errors
def extract_poses(reference, driving_video, keypoints, resolution, num_frames, motion, align_to_reference,
                  smooth_start, smooth_start_frames, auto_start, progress=gr.Progress()):
    """Detects and aligns the poses (CPU only). Returns the pose video, the reference with the first aligned pose
    drawn over it, a report with warnings, the negative pose video and the raw driving keypoints (JSON)."""
    settings = _pose_settings(resolution, num_frames, motion, align_to_reference, smooth_start, smooth_start_frames,
                              auto_start)
    with SERVICE.workspace() as work:  # deleted on the way out; the outputs go to Gradio's cache first
        result = SERVICE.extract(reference, driving_video, keypoints, settings, GenerationSettings(),
                                 progress=_detect_progress(progress), out_dir=work)
        _warn(result.step)
        return (publish(result.pose_video), publish(result.alignment_image), result.report,
                publish(result.negative_pose_video), publish(result.poses_json))


@user_errors
async def animate(reference, driving_video, keypoints, prompt, negative_prompt, resolution, num_frames, motion,
                  align_to_reference, smooth_start, smooth_start_frames, auto_start, guidance_scale,
                  pose_guidance_scale, window_start, window_end, steps, shift, seed, randomize_seed,
                  request: gr.Request, progress=gr.Progress()):
    """Animates the reference with the driving motion. Returns the video (H.264 mp4, 16 fps, with the driving video's
    audio when it has some), the pose video, the seed used and a report."""
    seed = random.randint(0, MAX_SEED) if check_flag(randomize_seed, "randomize_seed") else FIELDS["seed"].check(seed)
    settings = _generation_settings(prompt, negative_prompt, guidance_scale, pose_guidance_scale, window_start,
                                    window_end, steps, shift, seed)
    pose_settings = _pose_settings(resolution, num_frames, motion, align_to_reference, smooth_start,
                                   smooth_start_frames, auto_start)
    with SERVICE.workspace() as work:  # deleted on the way out (success, error, OOM or cancel)
        extracted = await asyncio.to_thread(SERVICE.extract, reference, driving_video, keypoints, pose_settings,
                                            settings, _detect_progress(progress), work)
        prepared = extracted.step.prepared
        SERVICE.check(settings, prepared.num_frames, prepared.height, prepared.width)
        _warn(extracted.step)
        # The audio is read now: uploads are deleted after CONFIG.file_ttl, which a long generation may outlast.
        audio = await asyncio.to_thread(SERVICE.output_audio, extracted.step, prepared.num_frames)

        session = getattr(request, "session_hash", None) or "local"
        job_id = f"{session}-{uuid.uuid4().hex[:8]}"
        SERVICE.cancels.start(job_id)

        def run():
            try:
                return generate_on_gpu(extracted.step.reference, prepared.positive, prepared.negative, settings,
                                       job_id, progress)
            finally:  # in the worker thread: a cancelled request's step is still running until here
                SERVICE.cancels.finish(job_id)

        start = time.perf_counter()
        try:
            frames = await asyncio.to_thread(run)
        except asyncio.CancelledError:  # Gradio's cancel (Stop button, client.cancel()): stop after the current step
            SERVICE.interrupt(job_id)
            raise
        progress(None, desc="Writing the video")
        result = await asyncio.to_thread(SERVICE.finish, extracted.step, frames, settings,
                                         time.perf_counter() - start, work, audio)
        return publish(result.video), publish(extracted.pose_video), result.seed, result.report


async def animate_example(reference, driving_video, keypoints, prompt, num_frames, request: gr.Request,
                          progress=gr.Progress()):
    d = GenerationSettings()
    return await animate(reference, driving_video, keypoints, prompt, "", DEFAULT_RESOLUTION, num_frames,
                         MOTION_REAL_TIME, True, False, 8, False, d.guidance_scale, d.pose_guidance_scale,
                         d.pose_guidance_window[0], d.pose_guidance_window[1], d.num_inference_steps, d.shift, 42,
                         False, request, progress)


@user_errors
def estimate(reference, resolution, num_frames, steps, guidance_scale, pose_guidance_scale, window_start,
             window_end):
    """The GPU time a generation with these settings needs (markdown). Uses the reference's aspect when given."""
    height, width = 576, 1024
    try:
        if reference:
            from PIL import Image

            width, height = check_reference_image(reference, LIMITS)
            with Image.open(reference) as im:
                if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientation: shown rotated by 90 degrees
                    width, height = height, width
        frames = FIELDS["num_frames"].check(num_frames)
        h, w = generation_size(height, width, SERVICE.requested_area(_choice(resolution, "resolution",
                                                                             list(RESOLUTION_PRESETS))))
        settings = _generation_settings("", "", guidance_scale, pose_guidance_scale, window_start, window_end, steps,
                                        5.0, 0)
        e = SERVICE.estimate(frames, h, w, settings)
    except InputError as error:  # shown in place while the visitor is still choosing
        return f"Estimate unavailable: {error}"
    text = f"**{w}x{h}, {frames} frames**: GPU time {e.describe()}."
    if RUNTIME.tiny:
        text += " (For the real model; tiny mode runs on the CPU at a capped size.)"
    limit = SERVICE.max_gpu_seconds
    if limit and e.seconds > limit:
        text += f" Over this app's limit of {format_seconds(limit)}."
    return text


def tiny_stats() -> dict:
    """Tiny mode only (tests): the GPU part's counters, live request workspaces, pending faults, queue settings."""
    return {**SERVICE.stats.snapshot(), "workspaces": SERVICE.live_workspaces(), "faults": SERVICE.faults.describe(),
            "queue_size": CONFIG.queue_size, "concurrency": CONFIG.concurrency}


def frames_to_seconds(num_frames):
    return round(int(num_frames) / FPS, 2)


def seconds_to_frames(seconds):
    frames = nearest_valid_frame_count(int(round(float(seconds or 0) * FPS)) + 1)
    frames = min(max(frames, 5), CONFIG.max_frames)
    return frames, round(frames / FPS, 2)


def shift_for(resolution):
    return 3.0 if resolution.startswith("480p") else 5.0  # released advice: 3.0 at 832x480, 5.0 at 1024x576


# ---------------------------------------------------------------------- UI
def _tiny(label: str) -> str:
    return f"{label} (TINY MODE: noise)" if RUNTIME.tiny else label


def build_demo() -> gr.Blocks:
    defaults = GenerationSettings()
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
                with gr.Tabs():
                    with gr.Tab("Driving video"):
                        driving_video = gr.Video(label="Driving video", height=300)
                    with gr.Tab("Keypoints (JSON)"):
                        keypoints = gr.File(label="Keypoint JSON (used instead of the video when given)",
                                            file_types=[".json"], type="filepath")
                prompt = gr.Textbox(label="Prompt", value=DEFAULT_PROMPT, lines=2,
                                    max_length=LIMITS.max_prompt_chars)
                with gr.Row():
                    default_frames = min(81, CONFIG.max_frames)
                    num_frames = gr.Slider(label="Length (frames, 4n+1)", step=4, value=default_frames,
                                           **_range("num_frames"))
                    seconds = gr.Number(label="Length (seconds at 16 fps)", value=frames_to_seconds(default_frames),
                                        precision=2, minimum=0.25, step=0.25)
                with gr.Row():
                    resolution = gr.Dropdown(label="Resolution", choices=list(RESOLUTION_PRESETS),
                                             value=DEFAULT_RESOLUTION,
                                             info="Pixel budget; the reference's aspect ratio is kept."
                                             + (" Tiny mode caps it." if RUNTIME.tiny else ""))
                    motion = gr.Radio(label="Motion speed", choices=list(MOTION_CHOICES), value=MOTION_REAL_TIME,
                                      info="Real time resamples the driving video to 16 fps; every frame plays "
                                      "a 30 fps clip about 1.9x slower, as the released code does.")
                with gr.Accordion("Start of the clip", open=False):
                    align_to_reference = gr.Checkbox(label="Align the driving poses to the reference (limb lengths "
                                                     "and position)", value=True)
                    with gr.Row():
                        smooth_start = gr.Checkbox(label="Smooth start from the reference's own pose", value=False)
                        smooth_start_frames = gr.Slider(label="Smooth-start frames", step=1, value=8,
                                                        **_range("smooth_start_frames"))
                    auto_start = gr.Checkbox(label="Automatic start frame (the driving frame closest to the "
                                             "reference's pose, within the first 2 s)", value=False)
                with gr.Accordion("Advanced", open=False):
                    negative_prompt = gr.Textbox(label="Negative prompt (empty: the released default)", lines=3,
                                                 value="", placeholder=DEFAULT_NEGATIVE_PROMPT,
                                                 max_length=LIMITS.max_prompt_chars)
                    with gr.Row():
                        guidance_scale = gr.Slider(label="Text guidance scale", step=0.1,
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
                        steps = gr.Slider(label="Steps", step=1, value=min(defaults.num_inference_steps,
                                                                           LIMITS.max_steps), **_range("steps"))
                        shift = gr.Slider(label="Shift (5 at 1024x576, 3 at 832x480)", step=0.5,
                                          value=defaults.shift, **_range("shift"))
                    with gr.Row():
                        seed = gr.Number(label="Seed", value=42, precision=0, **_range("seed"))
                        randomize_seed = gr.Checkbox(label="Randomise seed", value=True)
                estimate_md = gr.Markdown(label="GPU estimate")
                with gr.Row():
                    extract_btn = gr.Button("Extract poses", variant="secondary")
                    animate_btn = gr.Button("Animate", variant="primary")
                    cancel_btn = gr.Button("Cancel", variant="stop")
            with gr.Column(scale=1):
                with gr.Row():
                    alignment = gr.Image(label=_tiny("Reference + first aligned pose"), type="filepath", height=300,
                                         interactive=False)
                    pose_video = gr.Video(label=_tiny("Pose video"), height=300, interactive=False)
                pose_report = gr.Markdown(label="Pose report")
                with gr.Accordion("Negative poses and keypoints", open=False):
                    negative_pose_video = gr.Video(label=_tiny("Negative poses (pose guidance)"), height=240,
                                                   interactive=False)
                    poses_json = gr.File(label=_tiny("Driving keypoints (JSON, reusable as input)"), interactive=False)
                result = gr.Video(label=_tiny("Result"), height=420, interactive=False, autoplay=True)
                with gr.Row():
                    seed_used = gr.Number(label=_tiny("Seed used"), precision=0, interactive=False)
                result_report = gr.Markdown(label="Report")

        # Every value a request brings is checked on the server, named by its API parameter (see `guard`).
        harden_inputs({
            reference: "reference", driving_video: "driving_video", keypoints: "keypoints", prompt: "prompt",
            negative_prompt: "negative_prompt", resolution: "resolution", motion: "motion",
            align_to_reference: "align_to_reference", smooth_start: "smooth_start", auto_start: "auto_start",
            randomize_seed: "randomize_seed", num_frames: FIELDS["num_frames"],
            smooth_start_frames: FIELDS["smooth_start_frames"], guidance_scale: FIELDS["guidance_scale"],
            pose_guidance_scale: FIELDS["pose_guidance_scale"], window_start: FIELDS["window_start"],
            window_end: FIELDS["window_end"], steps: FIELDS["steps"], shift: FIELDS["shift"], seed: FIELDS["seed"],
        }, LIMITS)
        pose_inputs = [reference, driving_video, keypoints, resolution, num_frames, motion, align_to_reference,
                       smooth_start, smooth_start_frames, auto_start]
        extract_btn.click(
            extract_poses, pose_inputs, [pose_video, alignment, pose_report, negative_pose_video, poses_json],
            api_name="extract_poses", concurrency_limit=2, concurrency_id="poses",
        )
        animate_inputs = [reference, driving_video, keypoints, prompt, negative_prompt, resolution, num_frames,
                          motion, align_to_reference, smooth_start, smooth_start_frames, auto_start, guidance_scale,
                          pose_guidance_scale, window_start, window_end, steps, shift, seed, randomize_seed]
        animate_event = animate_btn.click(
            animate, animate_inputs, [result, pose_video, seed_used, result_report],
            api_name="animate", concurrency_limit=CONFIG.concurrency, concurrency_id="gpu",
        )
        cancel_btn.click(None, None, None, cancels=[animate_event])

        estimate_inputs = [reference, resolution, num_frames, steps, guidance_scale, pose_guidance_scale,
                           window_start, window_end]
        gr.on([demo.load] + [c.change for c in estimate_inputs], estimate, estimate_inputs, estimate_md,
              api_name="estimate", concurrency_limit=None, show_progress="hidden")  # instant: never waits
        # Frames drive seconds on any change (examples set them too); seconds drive frames on typing only.
        num_frames.change(frames_to_seconds, num_frames, seconds, queue=False, api_visibility="private")
        seconds.input(seconds_to_frames, seconds, [num_frames, seconds], queue=False, api_visibility="private")
        resolution.input(shift_for, resolution, shift, queue=False, api_visibility="private")

        gr.Examples(
            examples=[[os.path.join(EXAMPLES_DIR, e.reference),
                       os.path.join(EXAMPLES_DIR, e.video) if e.video else None,
                       os.path.join(EXAMPLES_DIR, e.keypoints) if e.keypoints else None,
                       e.prompt, e.num_frames] for e in EXAMPLES],
            inputs=[reference, driving_video, keypoints, prompt, num_frames],
            outputs=[result, pose_video, seed_used, result_report],
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
    return {"minimum": FIELDS[name].minimum, "maximum": FIELDS[name].maximum}


demo = build_demo()

if __name__ == "__main__":
    # A bounded queue (more waiting requests are refused with "Queue is full"), one event of each kind at a time
    # unless said otherwise (the GPU work: CONFIG.concurrency). Only the examples are served from disk besides what
    # the handlers return (copied into Gradio's cache); uploads beyond the file-size limit are refused by Gradio;
    # show_error=False: an unexpected error reaches the client without its text (handlers turn every expected one
    # into a gr.Error with a message, see steadydancer/app_support/guard.py).
    # On SIGTERM (a Space restarting, `kill`) shut down as on Ctrl+C, so Gradio deletes the files it tracks and this
    # process's own output and tiny-model directories go too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    atexit.register(shutil.rmtree, SERVICE.output_dir, ignore_errors=True)
    demo.queue(max_size=CONFIG.queue_size, default_concurrency_limit=1).launch(
        allowed_paths=[EXAMPLES_DIR], show_error=False, max_file_size=LIMITS.max_file_bytes)
