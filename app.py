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

from steadydancer.app_support.config import AppConfig, apply_environment, parse_config

CONFIG = parse_config(sys.argv[1:]) if __name__ == "__main__" else AppConfig.from_env()
apply_environment(CONFIG)

import asyncio  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

import gradio as gr  # noqa: E402
import torch  # noqa: E402

from steadydancer.app_support.duration import format_seconds  # noqa: E402
from steadydancer.app_support.examples import EXAMPLES  # noqa: E402
from steadydancer.app_support.poses import MOTION_CHOICES, MOTION_REAL_TIME, PoseSettings  # noqa: E402
from steadydancer.app_support.runtime import TINY_NOTICE, ModelLoadError, load_runtime  # noqa: E402
from steadydancer.app_support.service import (  # noqa: E402
    DEFAULT_PROMPT,
    AnimationService,
    GenerationCancelled,
    GenerationSettings,
)
from steadydancer.pipeline_steadydancer import DEFAULT_NEGATIVE_PROMPT  # noqa: E402
from steadydancer.pose import PoseError  # noqa: E402
from steadydancer.sizing import RESOLUTION_PRESETS, generation_size, nearest_valid_frame_count  # noqa: E402

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
SERVICE = AnimationService(RUNTIME)
print(f"SteadyDancer app: {'TINY (noise) ' if RUNTIME.tiny else ''}models loaded in {RUNTIME.load_seconds:.1f} s "
      f"on {RUNTIME.device}; GPU estimates for {SERVICE.gpu}.", flush=True)


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
    """Arrays in, uint8 frames out: what ZeroGPU ships to its GPU worker and back."""

    def report(step, total, desc):
        if progress is not None:
            progress((step, total), desc=desc, unit="steps")

    try:
        return SERVICE.generate_frames(reference, positive, negative, settings, job_id, report)
    except GenerationCancelled:
        raise gr.Error("Cancelled.", print_exception=False) from None
    except torch.OutOfMemoryError:
        raise gr.Error("Out of GPU memory: choose fewer frames or a lower resolution.") from None


# ---------------------------------------------------------------------- handlers
def _pose_settings(resolution, num_frames, motion, align, smooth_start, smooth_frames, auto_start) -> PoseSettings:
    return PoseSettings(
        max_area=SERVICE.max_area(resolution),
        requested_area=SERVICE.requested_area(resolution),
        num_frames=int(num_frames),
        real_time=motion == MOTION_REAL_TIME,
        align=bool(align),
        smooth_start_frames=int(smooth_frames) if smooth_start else 0,
        auto_start=bool(auto_start),
    )


def _detect_progress(progress):
    def report(done, total):
        of = f" of {total}" if total else ""
        progress((done, total) if total else None, desc=f"Detecting poses: frame {done}{of}", unit="frames")

    return report


def extract_poses(reference, driving_video, keypoints, resolution, num_frames, motion, align_to_reference,
                  smooth_start, smooth_start_frames, auto_start, progress=gr.Progress()):
    """Detects and aligns the poses (CPU only). Returns the pose video, the reference with the first aligned pose
    drawn over it, a report with warnings, the negative pose video and the raw driving keypoints (JSON)."""
    settings = _pose_settings(resolution, num_frames, motion, align_to_reference, smooth_start, smooth_start_frames,
                              auto_start)
    try:
        result = SERVICE.extract(reference, driving_video, keypoints, settings, GenerationSettings(),
                                 progress=_detect_progress(progress))
    except PoseError as error:
        raise gr.Error(str(error), print_exception=False) from None
    return result.pose_video, result.alignment_image, result.report, result.negative_pose_video, result.poses_json


async def animate(reference, driving_video, keypoints, prompt, negative_prompt, resolution, num_frames, motion,
                  align_to_reference, smooth_start, smooth_start_frames, auto_start, guidance_scale,
                  pose_guidance_scale, window_start, window_end, steps, shift, seed, randomize_seed,
                  request: gr.Request, progress=gr.Progress()):
    """Animates the reference with the driving motion. Returns the video (H.264 mp4, 16 fps, with the driving video's
    audio when it has some), the pose video, the seed used and a report."""
    seed = random.randint(0, MAX_SEED) if randomize_seed else int(seed)
    settings = GenerationSettings(
        prompt=(prompt or "").strip() or DEFAULT_PROMPT,
        negative_prompt=(negative_prompt or "").strip() or None,
        guidance_scale=float(guidance_scale),
        pose_guidance_scale=float(pose_guidance_scale),
        pose_guidance_window=(float(window_start), float(window_end)),
        num_inference_steps=int(steps),
        shift=float(shift),
        seed=seed,
    )
    pose_settings = _pose_settings(resolution, num_frames, motion, align_to_reference, smooth_start,
                                   smooth_start_frames, auto_start)
    try:
        extracted = await asyncio.to_thread(SERVICE.extract, reference, driving_video, keypoints, pose_settings,
                                            settings, _detect_progress(progress))
        prepared = extracted.step.prepared
        SERVICE.check(settings, prepared.num_frames, prepared.height, prepared.width)
    except (PoseError, ValueError) as error:
        raise gr.Error(str(error), print_exception=False) from None

    session = getattr(request, "session_hash", None) or "local"
    job_id = f"{session}-{uuid.uuid4().hex[:8]}"
    SERVICE.cancels.start(job_id)

    def run():
        try:
            return generate_on_gpu(extracted.step.reference, prepared.positive, prepared.negative, settings, job_id,
                                   progress)
        finally:  # in the worker thread: a cancelled request's step is still running until here
            SERVICE.cancels.finish(job_id)

    start = time.perf_counter()
    try:
        frames = await asyncio.to_thread(run)
    except asyncio.CancelledError:  # Gradio's cancel (Stop button, client.cancel()): stop after the current step
        SERVICE.interrupt(job_id)
        raise
    progress(None, desc="Writing the video")
    result = await asyncio.to_thread(SERVICE.finish, extracted.step, frames, settings, time.perf_counter() - start)
    return result.video, extracted.pose_video, result.seed, result.report


async def animate_example(reference, driving_video, keypoints, prompt, num_frames, request: gr.Request,
                          progress=gr.Progress()):
    d = GenerationSettings()
    return await animate(reference, driving_video, keypoints, prompt, "", DEFAULT_RESOLUTION, num_frames,
                         MOTION_REAL_TIME, True, False, 8, False, d.guidance_scale, d.pose_guidance_scale,
                         d.pose_guidance_window[0], d.pose_guidance_window[1], d.num_inference_steps, d.shift, 42,
                         False, request, progress)


def estimate(reference, resolution, num_frames, steps, guidance_scale, pose_guidance_scale, window_start,
             window_end):
    """The GPU time a generation with these settings needs (markdown). Uses the reference's aspect when given."""
    height, width = 576, 1024
    if reference:
        from PIL import Image

        with Image.open(reference) as im:
            width, height = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientation: shown rotated by 90 degrees
                width, height = height, width
    try:
        h, w = generation_size(height, width, SERVICE.requested_area(resolution))
        settings = GenerationSettings(guidance_scale=float(guidance_scale),
                                      pose_guidance_scale=float(pose_guidance_scale),
                                      pose_guidance_window=(float(window_start), float(window_end)),
                                      num_inference_steps=int(steps))
        e = SERVICE.estimate(int(num_frames), h, w, settings)
    except (ValueError, OSError) as error:
        return f"Estimate unavailable: {error}"
    text = f"**{w}x{h}, {int(num_frames)} frames**: GPU time {e.describe()}."
    if RUNTIME.tiny:
        text += " (For the real model; tiny mode runs on the CPU at a capped size.)"
    if CONFIG.max_gpu_seconds and e.seconds > CONFIG.max_gpu_seconds:
        text += f" Over this app's limit of {format_seconds(CONFIG.max_gpu_seconds)}."
    return text


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
    with gr.Blocks(title="SteadyDancer", delete_cache=(3600, 7200)) as demo:
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
                reference = gr.Image(label="Reference image", type="filepath", height=360)
                with gr.Tabs():
                    with gr.Tab("Driving video"):
                        driving_video = gr.Video(label="Driving video", height=300)
                    with gr.Tab("Keypoints (JSON)"):
                        keypoints = gr.File(label="Keypoint JSON (used instead of the video when given)",
                                            file_types=[".json"], type="filepath")
                prompt = gr.Textbox(label="Prompt", value=DEFAULT_PROMPT, lines=2)
                with gr.Row():
                    num_frames = gr.Slider(label="Length (frames, 4n+1)", minimum=5, maximum=CONFIG.max_frames,
                                           step=4, value=81)
                    seconds = gr.Number(label="Length (seconds at 16 fps)", value=frames_to_seconds(81), precision=2,
                                        minimum=0.25, step=0.25)
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
                        smooth_start_frames = gr.Slider(label="Smooth-start frames", minimum=1, maximum=32, step=1,
                                                        value=8)
                    auto_start = gr.Checkbox(label="Automatic start frame (the driving frame closest to the "
                                             "reference's pose, within the first 2 s)", value=False)
                with gr.Accordion("Advanced", open=False):
                    negative_prompt = gr.Textbox(label="Negative prompt (empty: the released default)", lines=3,
                                                 value="", placeholder=DEFAULT_NEGATIVE_PROMPT)
                    with gr.Row():
                        guidance_scale = gr.Slider(label="Text guidance scale", minimum=1.0, maximum=10.0, step=0.1,
                                                   value=defaults.guidance_scale)
                        pose_guidance_scale = gr.Slider(label="Pose guidance scale", minimum=0.0, maximum=5.0,
                                                        step=0.1, value=defaults.pose_guidance_scale)
                    with gr.Row():
                        window_start = gr.Slider(label="Pose guidance from (fraction of steps)", minimum=0.0,
                                                 maximum=1.0, step=0.05, value=defaults.pose_guidance_window[0])
                        window_end = gr.Slider(label="Pose guidance until", minimum=0.0, maximum=1.0, step=0.05,
                                               value=defaults.pose_guidance_window[1])
                    with gr.Row():
                        steps = gr.Slider(label="Steps", minimum=1, maximum=80, step=1,
                                          value=defaults.num_inference_steps)
                        shift = gr.Slider(label="Shift (5 at 1024x576, 3 at 832x480)", minimum=1.0, maximum=10.0,
                                          step=0.5, value=defaults.shift)
                    with gr.Row():
                        seed = gr.Number(label="Seed", value=42, precision=0, minimum=0, maximum=MAX_SEED)
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
              api_name="estimate", concurrency_limit=None, show_progress="hidden")
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
    return demo


demo = build_demo()

if __name__ == "__main__":
    demo.queue(max_size=CONFIG.queue_size).launch(allowed_paths=[EXAMPLES_DIR], show_error=True)
