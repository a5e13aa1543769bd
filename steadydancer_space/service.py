"""The one orchestrator of the Space: a validated request in, files out. `app.py` maps UI values to a request
(`steadydancer_space.request`), handles async and cancel, and wraps the GPU part for ZeroGPU; everything else happens
here, in order: GPU-time check (before any pose detection), poses, generation (the GPU part), writing."""

import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from steadydancer.defaults import OUTPUT_FPS, SamplerSettings
from steadydancer.fidelity import get_fidelity_mode
from steadydancer.pose import PoseModelInputs
from steadydancer.flops import CONFIG_14B
from steadydancer.video_io import AudioClip, delayed, read_audio, to_uint8_frames, write_mp4, write_side_by_side_mp4

from .calibration import load_calibration
from .estimate import GpuEstimate, detect_gpu, estimate_gpu_seconds, format_seconds
from .faults import FaultPlan, GpuStats
from .guard import GenerationCancelled, free_accelerator_memory
from .poses import REFERENCE_KEYPOINTS_NOTE, PoseStep, PoseStepCache, overlay, run_pose_step
from .request import POSE_PARAMETERS, AnimationRequest, PoseOptions, SamplerOptions, number_fields
from .runtime import TINY_NOTICE, Runtime
from .uploads import InputError, reference_size

OUTPUT_MAX_AGE_SECONDS = 2 * 3600  # leftovers of requests that never finished (a crash) are deleted after this
# ZeroGPU refuses a task that asks for more than a few minutes (about 5 for logged-in visitors at the time of writing;
# not documented). Without STEADYDANCER_MAX_GPU_SECONDS, requests estimated above this are refused before any work.
ZEROGPU_MAX_SECONDS = 300

# Defaults offered, best first: the first that fits the GPU-time cap (with a margin) is the UI's default.
DEFAULT_CHOICES = (("576p", 81), ("480p", 81), ("576p", 49), ("480p", 49), ("480p", 33), ("480p", 17))
DEFAULT_MARGIN = 0.75

# progress(done, total, description): `total` None when unknown (the app shows an indeterminate bar).
Progress = Callable[[int, int | None, str], None]


@dataclass
class ExtractResult:
    step: PoseStep
    pose_video: str
    negative_pose_video: str
    alignment_image: str
    poses_json: str
    report: str


@dataclass
class GeneratedFrames:
    """What the GPU part hands back (picklable, for ZeroGPU's worker): (N, H, W, 3) uint8 frames, seconds by stage."""

    frames: np.ndarray
    timings: dict[str, float]


@dataclass
class AnimateResult:
    video: str
    pose_video: str
    side_by_side: str  # photo | poses | result, with the audio
    seed: int
    report: str
    recipe: dict  # the API values that make this video again
    timings: dict[str, float]  # seconds by stage
    warnings: list[str]


class CancelRegistry:
    """Cancellation of running jobs, by job id, visible across processes.

    On ZeroGPU the GPU part runs in a worker process that the app's cancel (set in the main process) cannot reach
    through memory, so a cancel is a marker file in `directory`, which both processes see; `cancelled` is one
    `os.path.exists` per denoising step.

    A cancel can also come before its job reaches the server at all: `gradio_client` sends it while it is still
    uploading the inputs, then submits the job anyway. `cancel_session` records such a cancel of a session with
    nothing running, and the session's next job that starts within `early_window` seconds is cancelled at once.
    """

    MAX_EARLY_CANCELS = 10_000  # remembered at once (within `early_window`); more are dropped, not stored

    def __init__(self, directory: str, early_window: float = 10.0):
        self.directory = directory
        self.early_window = early_window
        os.makedirs(directory, exist_ok=True)
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._early: dict[str, float] = {}  # session -> when a cancel came with nothing of it running

    def _marker(self, job_id: str) -> str:
        return os.path.join(self.directory, f"{job_id}.cancel")

    def start(self, job_id: str, session: str) -> None:
        """Registers a job of `session`; it starts cancelled when a cancel of the session came just before it."""
        with self._lock:
            self._running.add(job_id)
            early = self._early.pop(session, None)
        if early is not None and time.monotonic() - early < self.early_window:
            self.cancel(job_id)

    def cancel(self, job_id: str) -> None:
        with open(self._marker(job_id), "w"):
            pass

    def cancel_session(self, session: str, early: bool = True) -> None:
        """Cancels `session`'s running jobs; with none running and `early` (the cancel named no event: its job has
        not reached the server yet), the session's next job. A cancel naming an event that is not running (one still
        queued, which Gradio drops, or one that just ended) must not cancel the visitor's next job."""
        prefix = f"{session}-"
        now = time.monotonic()
        with self._lock:
            running = [job for job in self._running if job.startswith(prefix)]
            if not running and early:
                # Expired entries go first: sessions come from requests, so the table must not grow without bound.
                self._early = {s: t for s, t in self._early.items() if now - t < self.early_window}
                if len(self._early) < self.MAX_EARLY_CANCELS:
                    self._early[session] = now
        for job_id in running:
            self.cancel(job_id)

    def cancel_all(self) -> None:
        """Cancels every running job (the app is stopping)."""
        with self._lock:
            running = list(self._running)
        for job_id in running:
            self.cancel(job_id)

    def cancelled(self, job_id: str | None) -> bool:
        return job_id is not None and os.path.exists(self._marker(job_id))

    def finish(self, job_id: str) -> None:
        with self._lock:
            self._running.discard(job_id)
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._marker(job_id))


def stamp(frames: np.ndarray, text: str) -> np.ndarray:
    """Burns `text` into the top of every frame, so a downloaded tiny-mode video says what it is."""
    import cv2

    frames = frames.copy()
    h, w = frames.shape[1:3]
    font, thickness = cv2.FONT_HERSHEY_SIMPLEX, 1 if w < 400 else 2
    (tw, th), base = cv2.getTextSize(text, font, 1.0, thickness)
    scale = min(1.0, (w - 4) / tw)  # fit the width
    (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
    band = th + base + 4
    for frame in frames:
        frame[:band] = (frame[:band] * 0.3).astype(np.uint8)
        cv2.putText(frame, text, (2, th + 2), font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return frames


class AnimationService:
    def __init__(self, runtime: Runtime, output_dir: str | None = None, faults: FaultPlan | None = None,
                 output_max_age: float = OUTPUT_MAX_AGE_SECONDS):
        self.runtime = runtime
        self.config = runtime.config
        self.limits = self.config.limits
        self.fields = number_fields(self.config.max_frames, self.limits)
        self.faults = faults or FaultPlan.for_mode(self.config.faults, runtime.tiny)
        self.stats = GpuStats()
        self.pose_cache = PoseStepCache(size=2)
        self.output_dir = output_dir or tempfile.mkdtemp(prefix="steadydancer-outputs-")
        self.cancels = CancelRegistry(os.path.join(self.output_dir, ".cancels"))
        self.output_max_age = output_max_age
        # Tiny mode runs on the CPU, but its estimates describe the real model on a typical GPU.
        # (ZeroGPU, real or simulated, is planned for as such.)
        auto = "h100" if runtime.tiny and not self.config.zerogpu else detect_gpu(self.config.zerogpu,
                                                                                 self.config.zerogpu_size)
        self.gpu = self.config.gpu if self.config.gpu != "auto" else auto
        # Figures the device check measured on this GPU, when bench/results/ has them (else the FLOP model).
        self.calibration = load_calibration(hardware=self.gpu)
        self._running_job: str | None = None
        self._long_jobs: dict = {}  # job id -> its LongVideo while it runs

    # ------------------------------------------------------------------ requests
    @property
    def tiny(self) -> bool:
        return self.runtime.tiny

    def request(self, reference=None, driving_video=None, keypoints=None, *, reference_keypoints=None,
                random_seed=None, **values) -> AnimationRequest:
        """An `AnimationRequest` from API values (by API parameter name; absent ones take their defaults)."""
        pose = PoseOptions.parse(self.fields, **{k: values.pop(k) for k in POSE_PARAMETERS if k in values})
        sampler = SamplerOptions.parse(self.fields, self.limits, random_seed=random_seed, **values)
        return AnimationRequest(reference or None, driving_video or None, keypoints or None, pose, sampler,
                                reference_keypoints or None)

    @staticmethod
    def sampler_for(job: AnimationRequest) -> SamplerOptions:
        """The sampler settings a job runs with: the released CLI's guidance in the released fidelity mode."""
        if job.pose.fidelity == "default":
            return job.sampler
        settings = get_fidelity_mode(job.pose.fidelity).sampler_kwargs(job.pose.area)
        return replace(job.sampler, preset="quality", num_inference_steps=settings["num_inference_steps"],
                       guidance_scale=settings["guidance_scale"], pose_guidance_scale=settings["pose_guidance_scale"],
                       pose_guidance_window=tuple(settings["pose_guidance_window"]), shift=settings["shift"])

    def generation_area(self, pose: PoseOptions) -> int:
        """The pixel budget generated at: the chosen one, capped in tiny mode to keep CPUs quick."""
        return min(pose.area, self.config.tiny_max_area) if self.tiny else pose.area

    def transformer_config(self) -> dict:
        # The estimate is for the real model even in tiny mode: it is what a visitor would pay on the Space.
        return CONFIG_14B if self.tiny else dict(self.runtime.pipe.transformer.config)

    def estimate(self, num_frames: int, height: int, width: int, sampler: SamplerOptions) -> GpuEstimate:
        """One GPU call: the whole video, or one window of a longer one (`num_windows`)."""
        return estimate_gpu_seconds(
            min(num_frames, self.config.window_frames), height, width, sampler.num_inference_steps,
            sampler.guidance_scale, sampler.pose_guidance_scale, sampler.pose_guidance_window, gpu=self.gpu,
            transformer_config=self.transformer_config(), calibration=self.calibration,
        )

    def num_windows(self, num_frames: int) -> int:
        """GPU calls a video of `num_frames` takes: 1, or its windows (`steadydancer.long_video.plan_windows`)."""
        from steadydancer.long_video import plan_windows

        window = self.config.window_frames
        return 1 if num_frames <= window else len(plan_windows(num_frames, window))

    def describe_estimate(self, num_frames: int, height: int, width: int, estimate: GpuEstimate) -> str:
        """Markdown for `estimate` (of one GPU call, from `estimate` or `estimate_request`), with the windows' total."""
        windows = self.num_windows(num_frames)
        text = f"**{width}x{height}, {num_frames} frames**: GPU time {estimate.describe()}"
        if windows > 1:
            text += (f" per window; {windows} windows of {self.config.window_frames} frames, each its own GPU call: "
                     f"about {format_seconds(windows * (estimate.transformer_seconds + estimate.other_seconds))}"
                     + (f" and {format_seconds(windows * estimate.quota_seconds)} of quota"
                        if estimate.quota_seconds is not None else "") + " in all")
        return text + "."

    def estimate_request(self, job: AnimationRequest) -> tuple[GpuEstimate, int, int]:
        """(estimate of one GPU call, height, width) at the size the visitor chose, from the reference's header (a
        landscape 1024x576 frame when there is no reference yet)."""
        ref_h, ref_w = reference_size(job.reference, self.limits) if job.reference else (576, 1024)
        height, width = job.pose.generation_size(ref_h, ref_w)
        return self.estimate(job.pose.num_frames, height, width, self.sampler_for(job)), height, width

    def default_choices(self, margin: float = DEFAULT_MARGIN) -> tuple[str, int]:
        """(resolution, frames) offered by default: the largest that fits `margin` of the GPU-time cap with the
        default (fast) preset, for a landscape reference (the estimate depends on the area, not the aspect)."""
        limit = self.max_gpu_seconds
        for resolution, frames in DEFAULT_CHOICES:
            frames = min(frames, self.config.max_frames)
            height, width = PoseOptions(resolution=resolution).generation_size(576, 1024)
            if limit is None or self.estimate(frames, height, width, SamplerOptions()).seconds <= margin * limit:
                return resolution, frames
        return DEFAULT_CHOICES[-1]

    @property
    def max_gpu_seconds(self) -> float | None:
        """The GPU time one request may ask for: STEADYDANCER_MAX_GPU_SECONDS, else ZeroGPU's ceiling on ZeroGPU."""
        if self.config.max_gpu_seconds is not None:
            return self.config.max_gpu_seconds
        return ZEROGPU_MAX_SECONDS if self.config.zerogpu else None

    def over_limit(self, estimate: GpuEstimate) -> bool:
        limit = self.max_gpu_seconds
        return limit is not None and estimate.seconds > limit

    def check(self, job: AnimationRequest) -> None:
        """Raises `InputError` naming the first problem, before any pose detection or GPU time: the pipeline's own
        `check_inputs` (its ValueErrors name the argument), then the GPU-time limit."""
        job.require_files()
        estimate, height, width = self.estimate_request(job)
        sampler = self.sampler_for(job)
        try:
            self.runtime.pipe.check_inputs(
                height=height, width=width, num_frames=job.pose.num_frames,
                num_inference_steps=sampler.num_inference_steps, guidance_scale=sampler.guidance_scale,
                pose_guidance_scale=sampler.pose_guidance_scale, pose_guidance_window=sampler.pose_guidance_window,
                shift=sampler.shift, has_negative_pose=True,
            )
        except ValueError as error:
            raise InputError(str(error)) from None
        if self.over_limit(estimate):
            limit = self.max_gpu_seconds
            raise InputError(
                f"This request needs about {format_seconds(estimate.seconds)} of GPU time; this app allows "
                f"{format_seconds(limit)}. Choose the fast preset, fewer frames or a lower resolution."
            )

    # ------------------------------------------------------------------ files
    def new_output_dir(self) -> str:
        """A fresh directory for one request's files (its name is random; nothing from the visitor is in it)."""
        self._prune_outputs()
        path = os.path.join(self.output_dir, uuid.uuid4().hex[:12])
        os.makedirs(path)
        return path

    @contextlib.contextmanager
    def workspace(self):
        """A per-request working directory, deleted when the request ends, whatever the outcome. The app hands the
        outputs over to Gradio's cache (`guard.publish`) before leaving the block."""
        path = self.new_output_dir()
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def live_workspaces(self) -> int:
        try:
            return sum(1 for entry in os.scandir(self.output_dir) if entry.is_dir() and entry.name[0] != ".")
        except OSError:
            return 0

    def _prune_outputs(self) -> None:
        cutoff = time.time() - self.output_max_age
        try:  # request folders, and cancel markers left by a cancel that came after its job ended
            entries = [e for e in os.scandir(self.output_dir) if e.name[0] != "."]
            entries += list(os.scandir(self.cancels.directory))
        except OSError:
            return
        for entry in entries:
            try:
                if entry.stat().st_mtime >= cutoff:
                    continue
                if entry.is_dir():
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.remove(entry.path)
            except OSError:
                continue

    # ------------------------------------------------------------------ pose step
    def poses(self, job: AnimationRequest, progress: Progress | None = None,
              job_id: str | None = None) -> PoseStep:
        def report(done, total):
            if job_id is not None and self.cancels.cancelled(job_id):
                raise GenerationCancelled()
            if progress is not None:
                progress(done, total, f"Detecting poses: frame {done}" + (f" of {total}" if total else ""))

        return run_pose_step(self.runtime.detector, job, self.generation_area(job.pose), cache=self.pose_cache,
                             progress=report, limits=self.limits)

    def write_pose_video(self, step: PoseStep, out_dir: str, negative: bool = False) -> str:
        frames = step.prepared.negative if negative else step.prepared.positive
        if self.tiny:
            frames = stamp(frames, "TINY MODE - FAKE POSES")
        name = "negative_poses.mp4" if negative else "poses.mp4"
        return write_mp4(os.path.join(out_dir, name), frames, OUTPUT_FPS, preset="veryfast")

    def extract(self, job: AnimationRequest, progress: Progress | None = None,
                out_dir: str | None = None) -> ExtractResult:
        """The Extract button: poses, their videos, the alignment overlay and the raw keypoints, before any GPU time."""
        import PIL.Image

        step = self.poses(job, progress)
        out = out_dir or self.new_output_dir()
        alignment = os.path.join(out, "alignment.png")
        PIL.Image.fromarray(overlay(step.reference, step.prepared.positive[0])).save(alignment)
        poses_json = os.path.join(out, "driving_poses.json")
        with open(poses_json, "w", encoding="utf-8") as f:
            json.dump(step.prepared.driving_poses.to_dict(), f)
        return ExtractResult(step, self.write_pose_video(step, out), self.write_pose_video(step, out, negative=True),
                             alignment, poses_json, self.pose_report(step, job.sampler))

    def pose_report(self, step: PoseStep, sampler: SamplerOptions | None = None) -> str:
        p = step.prepared
        lines = []
        if self.tiny:
            lines.append(f"**{TINY_NOTICE}**")
        source = "keypoint JSON" if step.driving_video is None else "driving video"
        lines.append(
            f"**{p.num_frames} pose frames** at {p.width}x{p.height} ({p.num_frames / OUTPUT_FPS:.2f} s at "
            f"{OUTPUT_FPS} fps) from the {source}"
            + (f" ({p.source_fps:.3g} fps source)" if p.source_fps else "")
            + f"; the clip starts at {p.start_time:.2f} s (frame {p.start_index + 1}), aligned on frame "
            f"{p.align_index + 1}."
        )
        if step.reference_from_keypoints:
            lines.append(REFERENCE_KEYPOINTS_NOTE)
        if p.transition.any():
            lines.append(f"The first {int(p.transition.sum())} frames move smoothly from the reference's own pose.")
        if step.driving_video and p.video_info is not None and p.video_info.has_audio:
            note = self.audio_note(step)
            lines.append(note or "The driving video's audio will be added to the result, aligned to the clip.")
        if sampler is not None:
            # Tiny mode caps the size; the estimate is for the real model at the size the visitor asked for.
            height, width = step.options.generation_size(*step.reference.shape[:2])
            estimate = self.estimate(p.num_frames, height, width, sampler)
            lines.append("Generation estimate: " + self.describe_estimate(p.num_frames, height, width, estimate))
        lines += [f"Warning: {w}" for w in step.warnings]
        return "\n\n".join(lines)

    # ------------------------------------------------------------------ generation
    def generate_frames(self, reference: np.ndarray, poses: PoseModelInputs, sampler: SamplerOptions,
                        job_id: str | None = None, progress: Progress | None = None,
                        preview_dir: str | None = None) -> "GeneratedFrames":
        """Runs the pipeline; returns the (N, H, W, 3) uint8 frames and the time of each stage. Raises
        GenerationCancelled when the job is cancelled.

        This is the GPU part: its arguments are plain arrays and settings, so ZeroGPU can send them to its worker.
        With `preview_dir`, each step writes a preview of the video it predicts there (`write_preview`): a file, so
        the app sees it from a ZeroGPU worker too.
        """
        import torch

        pipe = self.runtime.pipe
        steps = sampler.num_inference_steps
        num_frames, _, height, width = poses.pose_video.shape
        inject_oom = self.faults.take_oom(sampler.seed)

        step_ends = []

        def on_step(pipeline, i, t, tensors):
            step_ends.append(time.perf_counter())
            if inject_oom:  # tiny-mode fault injection (STEADYDANCER_FAULT): fail as CUDA would, inside the loop
                raise torch.OutOfMemoryError(
                    f"CUDA out of memory after denoising step {i + 1} of {steps} (injected by STEADYDANCER_FAULT)")
            if preview_dir is not None:
                self.write_preview(tensors["denoised"], i, preview_dir)
            if progress is not None:
                progress(i + 1, steps, f"Denoising: step {i + 1} of {steps}")
            if job_id is not None and self.cancels.cancelled(job_id):
                pipeline.interrupt_generation()
                print(f"steadydancer: job {job_id} cancelled after step {i + 1} of {steps}", flush=True)
                raise GenerationCancelled()
            return tensors

        # One generation at a time: a cancelled one may still be finishing its step.
        with self.runtime.lock, self.stats.track():
            self._running_job = job_id
            failure = None
            try:
                if job_id is not None and self.cancels.cancelled(job_id):
                    raise GenerationCancelled()
                if progress is not None:
                    progress(0, steps, "Encoding the reference, the prompt and the poses")
                # As released, the noise is drawn on the GPU; --cpu-noise draws it on the CPU (same noise anywhere).
                noise = (dict(generator=torch.Generator("cpu").manual_seed(sampler.seed)) if self.config.cpu_noise
                         else dict(seed=sampler.seed))
                start = time.perf_counter()
                # The LoRA on or off (no reload), and the prompts' embeddings from the cache when seen before.
                self.runtime.presets.use("fast" if sampler.uses_distill_lora else "quality")
                prompts = self.runtime.prompts.pipeline_kwargs(sampler.prompt, sampler.negative_prompt,
                                                               guidance_scale=sampler.guidance_scale)
                output = pipe(
                    image=reference,
                    **poses.pipeline_kwargs(),
                    **noise,
                    **prompts,
                    height=height,
                    width=width,
                    num_frames=num_frames,
                    num_inference_steps=steps,
                    guidance_scale=sampler.guidance_scale,
                    pose_guidance_scale=sampler.pose_guidance_scale,
                    pose_guidance_window=sampler.pose_guidance_window,
                    shift=sampler.shift,
                    output_type="np",
                    callback_on_step_end=on_step,
                    callback_on_step_end_tensor_inputs=["latents", "denoised"],
                )
            except (GenerationCancelled, torch.OutOfMemoryError) as error:
                # The traceback holds the frames of the failed step and their tensors: drop it, so the memory can
                # be released below, before the error is passed on (and shown by `guard.to_user_error`).
                failure = error.with_traceback(None)
            finally:
                self._running_job = None
                pipe.maybe_free_model_hooks()
            if failure is not None:
                free_accelerator_memory()
                raise failure
            if job_id is not None and self.cancels.cancelled(job_id):  # interrupted between two steps
                del output
                free_accelerator_memory()
                raise GenerationCancelled()
        end = time.perf_counter()
        frames = to_uint8_frames(output.frames)
        # The step callback runs after each step, so the encoders' time is the first interval less one step.
        step = (step_ends[-1] - step_ends[0]) / (len(step_ends) - 1) if len(step_ends) > 1 else 0.0
        encoding = max(0.0, step_ends[0] - start - step) if step_ends else 0.0
        timings = {"encoding": encoding, "denoising": (step_ends[-1] - start - encoding) if step_ends else 0.0,
                   "decoding": end - (step_ends[-1] if step_ends else start)}
        return GeneratedFrames(frames, timings)

    # ------------------------------------------------------------------ long videos
    def generate_long(self, step: PoseStep, sampler: SamplerOptions, job_id: str,
                      run_window_on_gpu: Callable[..., tuple], progress: Progress | None = None) -> "GeneratedFrames":
        """A video longer than a window (`steadydancer.long_video.LongVideo`): windows of `config.window_frames`,
        each continuing from the last frame of the one before, each keeping the original photo as its identity
        anchor, window i seeded with seed + i. What a window carries to the next comes back from each GPU call."""
        from steadydancer.long_video import LongVideo

        def report(window, windows, done, steps):
            if progress is not None:
                progress(done, steps, f"Window {window + 1} of {windows}, step {done} of {steps}")

        video = LongVideo(
            self.runtime.pipe, step.reference, step.prepared, step.prepared.num_frames,
            segment_frame_length=self.config.window_frames, prompt=sampler.prompt,
            negative_prompt=sampler.negative_prompt, settings=SamplerSettings(
                num_inference_steps=sampler.num_inference_steps, guidance_scale=sampler.guidance_scale,
                pose_guidance_scale=sampler.pose_guidance_scale, pose_guidance_window=sampler.pose_guidance_window,
                shift=sampler.shift), seed=sampler.seed,
            noise_device="cpu" if self.config.cpu_noise else None, callback=report,
            cancel=lambda: self.cancels.cancelled(job_id),
        )
        self._long_jobs[job_id] = video
        start, windows = time.perf_counter(), []
        try:
            for index in range(video.num_windows):
                frames, video.state = run_window_on_gpu(job_id, index, video.state, sampler)
                windows.append(frames)
        finally:
            self._long_jobs.pop(job_id, None)
        return GeneratedFrames(np.concatenate(windows), {"generating": time.perf_counter() - start})

    def generate_window(self, job_id: str, index: int, state, sampler: SamplerOptions) -> tuple[np.ndarray, object]:
        """The GPU part of one window of a long video: (its new frames as uint8, the state for the next window)."""
        from steadydancer.long_video import LongVideoCancelled

        video = self._long_jobs[job_id]
        video.state = state
        with self.runtime.lock, self.stats.track():
            self._running_job = job_id
            try:
                self.runtime.presets.use("fast" if sampler.uses_distill_lora else "quality")
                frames = video.run_window(index)
            except LongVideoCancelled:
                raise GenerationCancelled() from None
            finally:
                self._running_job = None
        return to_uint8_frames(frames), video.state

    def window_seconds(self, job_id: str, sampler: SamplerOptions) -> int:
        """The GPU time one window asks for (ZeroGPU's duration of a window's call)."""
        video = self._long_jobs[job_id]
        return self.estimate(self.config.window_frames, video.height, video.width, sampler).seconds

    @staticmethod
    def write_preview(denoised, step: int, directory: str) -> str:
        """A strip of 4 frames of the clean video step `step` predicts, by the Wan VAE's linear latent-to-RGB
        projection (no VAE decode: about a millisecond), as `preview_NNN.png` in `directory`."""
        import PIL.Image

        from steadydancer.preview import preview_strip

        path = os.path.join(directory, f"preview_{step:04d}.png")
        PIL.Image.fromarray(preview_strip(denoised, max_frames=4, scale=2)).save(path + ".tmp", format="PNG")
        os.replace(path + ".tmp", path)  # whole files only: the app may read it at any moment
        return path

    @staticmethod
    def latest_preview(directory: str) -> str | None:
        with contextlib.suppress(OSError):
            names = sorted(n for n in os.listdir(directory) if n.startswith("preview_") and n.endswith(".png"))
            return os.path.join(directory, names[-1]) if names else None
        return None

    def interrupt(self, job_id: str) -> None:
        """Cancels `job_id`: pose detection stops after the current frame, denoising after the current step (in
        this process or in a ZeroGPU worker, which sees the same marker file)."""
        self.cancels.cancel(job_id)
        if self._running_job == job_id:
            self.runtime.pipe.interrupt_generation()

    # ------------------------------------------------------------------ outputs
    def audio_note(self, step: PoseStep) -> str | None:
        """Why the audio is left out, or None when it is used."""
        p = step.prepared
        if not step.options.real_time and p.source_fps and abs(p.source_fps - OUTPUT_FPS) > 0.05:
            return (f"The audio is left out: 'every frame' plays the {p.source_fps:.3g} fps clip at 16 fps, "
                    f"{p.source_fps / OUTPUT_FPS:.2f}x slower than its sound.")
        return None

    def output_audio(self, step: PoseStep, num_frames: int) -> AudioClip | None:
        p = step.prepared
        if step.driving_video is None or p.video_info is None or not p.video_info.has_audio:
            return None
        if self.audio_note(step) is not None:
            return None
        lead_in = step.lead_in_seconds
        try:
            clip = read_audio(step.driving_video, start=p.start_time, duration=num_frames / OUTPUT_FPS - lead_in)
        except Exception as error:  # a broken audio track costs the sound, not the video
            print(f"steadydancer: the driving video's audio cannot be read ({type(error).__name__}); the result "
                  "will be silent.", flush=True)
            return None
        return delayed(clip, lead_in) if clip is not None else None

    def finish(self, job: AnimationRequest, step: PoseStep, generated: "GeneratedFrames", out_dir: str,
               audio: AudioClip | None, timings: dict[str, float]) -> AnimateResult:
        """Writes the result and the side-by-side video (photo, poses, result) with `audio` (read by `output_audio`
        before the generation, so a long generation never needs the upload again), and the report."""
        start = time.perf_counter()
        frames = stamp(generated.frames, "TINY MODE - NOISE") if self.tiny else generated.frames
        sampler = job.sampler
        video = write_mp4(os.path.join(out_dir, f"steadydancer_seed{sampler.seed}.mp4"), frames, OUTPUT_FPS,
                          audio=audio)
        side_by_side = write_side_by_side_mp4(os.path.join(out_dir, f"steadydancer_seed{sampler.seed}_sbs.mp4"),
                                              frames, step.prepared.positive, step.reference, audio=audio)
        pose_video = self.write_pose_video(step, out_dir)
        timings = {**timings, **generated.timings, "writing": time.perf_counter() - start}
        return AnimateResult(video, pose_video, side_by_side, sampler.seed, self.result_report(job, step, frames,
                             audio is not None, timings), job.recipe(), timings, step.warnings)

    def result_report(self, job: AnimationRequest, step: PoseStep, frames: np.ndarray, has_audio: bool,
                      timings: dict[str, float]) -> str:
        sampler, options = self.sampler_for(job), job.pose
        lines = [f"**{TINY_NOTICE}**"] if self.tiny else []
        lines.append(
            f"{len(frames)} frames at {frames.shape[2]}x{frames.shape[1]}, {OUTPUT_FPS} fps "
            f"({len(frames) / OUTPUT_FPS:.2f} s)" + (", with the driving video's audio." if has_audio else ".")
        )
        lines.append(
            f"Settings: {options.resolution}, seed {sampler.seed}, {sampler.num_inference_steps} steps, text guidance "
            f"{sampler.guidance_scale:g}, pose guidance {sampler.pose_guidance_scale:g} in "
            f"{sampler.pose_guidance_window[0]:g}-{sampler.pose_guidance_window[1]:g}, shift {sampler.shift:g}, "
            f"motion {'real time' if options.real_time else 'every frame'}"
            + (", the released command line's behaviour." if options.fidelity == "released" else ".")
        )
        if step.reference_from_keypoints:
            lines.append(REFERENCE_KEYPOINTS_NOTE)
        lines.append("Time: " + ", ".join(f"{stage} {format_seconds(seconds)}" for stage, seconds in timings.items())
                     + f" ({format_seconds(sum(timings.values()))} in all).")
        lines += [f"Warning: {w}" for w in step.warnings]
        return "\n\n".join(lines)

    def thumbnail(self, video: str, height: int = 160) -> str:
        """A PNG of the video's middle frame beside it (for the visitor's history)."""
        import PIL.Image

        from steadydancer.pose import iter_video_frames, probe_video

        middle = probe_video(video).num_frames // 2
        for index, decoded in enumerate(iter_video_frames(video, None, max_frames=middle + 1)):
            image = decoded.image  # frames are decoded one at a time: a long video is never held whole
        frame = PIL.Image.fromarray(image)
        frame.thumbnail((height * 4, height))
        path = os.path.splitext(video)[0] + "_thumb.png"
        frame.save(path)
        return path

    # ------------------------------------------------------------------ the whole job
    def animate(self, job: AnimationRequest, job_id: str, run_on_gpu: Callable[..., "GeneratedFrames"],
                out_dir: str, progress: Progress | None = None, warn: Callable[[str], None] | None = None,
                run_window_on_gpu: Callable[..., tuple] | None = None) -> AnimateResult:
        """Check, poses, GPU part, writing. `run_on_gpu(reference, poses, sampler, job_id)` is
        `generate_frames`, wrapped by the app for ZeroGPU; a video longer than a window runs window by window through
        `run_window_on_gpu(job_id, index, state, sampler)` (`generate_window`, wrapped likewise: each window is its own
        GPU call). `warn` receives the pose step's warnings before the GPU part starts. Raises `GenerationCancelled` once `job_id` is cancelled."""
        if self.cancels.cancelled(job_id):  # cancelled before it started
            raise GenerationCancelled()
        self.check(job)
        start = time.perf_counter()
        step = self.poses(job, progress, job_id)
        for note in step.warnings if warn is not None else ():
            warn(note)
        audio = self.output_audio(step, step.prepared.num_frames)
        timings = {"poses": time.perf_counter() - start}
        prepared, sampler = step.prepared, self.sampler_for(job)
        if prepared.num_frames > self.config.window_frames:
            generated = self.generate_long(step, sampler, job_id, run_window_on_gpu or self.generate_window, progress)
        else:
            # The released resize chain of the pose frames, on the CPU before the GPU part (not cached: 1.15 GB at
            # 576p).
            generated = run_on_gpu(step.reference, prepared.model_inputs(), sampler, job_id)
        if progress is not None:
            progress(0, None, "Writing the video")
        return self.finish(job, step, generated, out_dir, audio, timings)
