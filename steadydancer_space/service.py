"""What the app's buttons do, without Gradio: extract poses, generate frames (with progress and cancellation), write
the videos. `app.py` only maps UI values to these calls and wraps the GPU part for ZeroGPU."""

import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import numpy as np

from steadydancer.flops import CONFIG_14B
from steadydancer.sizing import RESOLUTIONS, generation_size
from steadydancer_space.uploads import InputError, Limits

from .estimate import GpuEstimate, detect_gpu, estimate_gpu_seconds, format_seconds
from .faults import FaultPlan, GpuStats
from .guard import GenerationCancelled, free_accelerator_memory
from .poses import OUTPUT_FPS, PoseSettings, PoseStep, PoseStepCache, overlay, run_pose_step
from .runtime import TINY_NOTICE, Runtime
from steadydancer.video_io import AudioClip, delayed, read_audio, write_mp4

DEFAULT_PROMPT = "A person dancing, smooth natural motion, the same person and clothes as in the photo, high quality."
OUTPUT_MAX_AGE_SECONDS = 2 * 3600  # leftovers of requests that never finished (a crash) are deleted after this
# ZeroGPU refuses a task that asks for more than a few minutes (about 5 for logged-in visitors at the time of writing;
# not documented). Without STEADYDANCER_MAX_GPU_SECONDS, requests estimated above this are refused before any work.
ZEROGPU_MAX_SECONDS = 300


@dataclass(frozen=True)
class GenerationSettings:
    """The sampler's settings (released defaults, SPEC.md section 3)."""

    prompt: str = DEFAULT_PROMPT
    negative_prompt: str | None = None  # None: the released default negative prompt
    guidance_scale: float = 5.0
    pose_guidance_scale: float = 1.0
    pose_guidance_window: tuple[float, float] = (0.1, 0.4)
    num_inference_steps: int = 40
    shift: float = 5.0
    seed: int = 0


@dataclass
class ExtractResult:
    step: PoseStep
    pose_video: str
    negative_pose_video: str
    alignment_image: str
    poses_json: str
    report: str


@dataclass
class AnimateResult:
    video: str
    seed: int
    report: str
    has_audio: bool
    seconds: float


class CancelRegistry:
    """Cancellation of running generations, by job id (a session may have one job running at a time)."""

    def __init__(self):
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def start(self, job_id: str) -> threading.Event:
        with self._lock:
            event = self._events[job_id] = threading.Event()
            return event

    def cancel(self, job_id: str) -> bool:
        with self._lock:
            event = self._events.get(job_id)
        if event is None:
            return False
        event.set()
        return True

    def cancelled(self, job_id: str) -> bool:
        with self._lock:
            event = self._events.get(job_id)
        return event is not None and event.is_set()

    def finish(self, job_id: str) -> None:
        with self._lock:
            self._events.pop(job_id, None)


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
    def __init__(self, runtime: Runtime, output_dir: str | None = None, limits: Limits | None = None,
                 faults: FaultPlan | None = None, output_max_age: float = OUTPUT_MAX_AGE_SECONDS):
        self.runtime = runtime
        self.config = runtime.config
        self.limits = limits or self.config.limits
        self.faults = faults or FaultPlan.for_mode(self.config.faults, runtime.tiny)
        self.stats = GpuStats()
        self.pose_cache = PoseStepCache(size=2)
        self.cancels = CancelRegistry()
        self.output_dir = output_dir or tempfile.mkdtemp(prefix="steadydancer-outputs-")
        self.output_max_age = output_max_age
        # Tiny mode runs on the CPU, but its estimates describe the real model on a typical GPU.
        auto = "h100" if runtime.tiny else detect_gpu(self.config.zerogpu, self.config.zerogpu_size)
        self.gpu = self.config.gpu if self.config.gpu != "auto" else auto
        self._running_job: str | None = None

    # ------------------------------------------------------------------ settings
    @property
    def tiny(self) -> bool:
        return self.runtime.tiny

    @staticmethod
    def requested_area(resolution: str) -> int:
        """The pixel budget of a preset name (or of a number of pixels)."""
        return RESOLUTIONS[resolution] if resolution in RESOLUTIONS else int(resolution)

    def max_area(self, resolution: str) -> int:
        """The budget generated at: the requested one, capped in tiny mode to keep CPUs quick."""
        area = self.requested_area(resolution)
        return min(area, self.config.tiny_max_area) if self.tiny else area

    def transformer_config(self) -> dict:
        # The estimate is for the real model even in tiny mode: it is what a visitor would pay on the Space.
        return CONFIG_14B if self.tiny else dict(self.runtime.pipe.transformer.config)

    def estimate(self, num_frames: int, height: int, width: int, settings: GenerationSettings) -> GpuEstimate:
        return estimate_gpu_seconds(
            num_frames, height, width, settings.num_inference_steps, settings.guidance_scale,
            settings.pose_guidance_scale, tuple(settings.pose_guidance_window), gpu=self.gpu,
            transformer_config=self.transformer_config(),
        )

    @property
    def max_gpu_seconds(self) -> float | None:
        """The GPU time one request may ask for: STEADYDANCER_MAX_GPU_SECONDS, else ZeroGPU's ceiling on ZeroGPU."""
        if self.config.max_gpu_seconds is not None:
            return self.config.max_gpu_seconds
        return ZEROGPU_MAX_SECONDS if self.config.zerogpu else None

    def check(self, settings: GenerationSettings, num_frames: int, height: int, width: int) -> None:
        """Raises `InputError` naming the first bad setting, before any GPU time is spent (the pipeline's own
        `check_inputs`, whose ValueErrors name the argument, then the GPU-time limit)."""
        try:
            self.runtime.pipe.check_inputs(
                height=height, width=width, num_frames=num_frames,
                num_inference_steps=int(settings.num_inference_steps), guidance_scale=settings.guidance_scale,
                pose_guidance_scale=settings.pose_guidance_scale,
                pose_guidance_window=tuple(settings.pose_guidance_window), shift=settings.shift,
                has_negative_pose=True,
            )
        except ValueError as error:
            raise InputError(str(error)) from None
        limit = self.max_gpu_seconds
        if limit is not None:
            estimate = self.estimate(num_frames, height, width, settings)
            if estimate.seconds > limit:
                raise InputError(
                    f"This request needs about {format_seconds(estimate.seconds)} of GPU time; this app allows "
                    f"{format_seconds(limit)}. Choose fewer frames, fewer steps or a lower resolution."
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
            return sum(1 for entry in os.scandir(self.output_dir) if entry.is_dir())
        except OSError:
            return 0

    def _prune_outputs(self) -> None:
        cutoff = time.time() - self.output_max_age
        try:
            entries = list(os.scandir(self.output_dir))
        except OSError:
            return
        for entry in entries:
            try:
                if entry.is_dir() and entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry.path, ignore_errors=True)
            except OSError:
                continue

    # ------------------------------------------------------------------ pose step
    def poses(self, reference: str | None, video: str | None, keypoints: str | None, settings: PoseSettings,
              progress: Callable[[int, int | None], None] | None = None) -> PoseStep:
        return run_pose_step(self.runtime.detector, reference, video, keypoints, settings, cache=self.pose_cache,
                             progress=progress, limits=self.limits)

    def extract(self, reference: str | None, video: str | None, keypoints: str | None, settings: PoseSettings,
                generation: GenerationSettings | None = None,
                progress: Callable[[int, int | None], None] | None = None, out_dir: str | None = None) -> ExtractResult:
        import PIL.Image

        step = self.poses(reference, video, keypoints, settings, progress)
        prepared = step.prepared
        out = out_dir or self.new_output_dir()
        positive, negative = prepared.positive, prepared.negative
        if self.tiny:
            positive, negative = stamp(positive, "TINY MODE - FAKE POSES"), stamp(negative, "TINY MODE - FAKE POSES")
        pose_video = write_mp4(os.path.join(out, "poses.mp4"), positive, OUTPUT_FPS, preset="veryfast")
        negative_video = write_mp4(os.path.join(out, "negative_poses.mp4"), negative, OUTPUT_FPS, preset="veryfast")
        alignment = os.path.join(out, "alignment.png")
        PIL.Image.fromarray(overlay(step.reference, prepared.positive[0])).save(alignment)
        poses_json = os.path.join(out, "driving_poses.json")
        with open(poses_json, "w", encoding="utf-8") as f:
            json.dump(prepared.driving_poses.to_dict(), f)
        report = self.pose_report(step, generation)
        return ExtractResult(step, pose_video, negative_video, alignment, poses_json, report)

    def pose_report(self, step: PoseStep, generation: GenerationSettings | None = None) -> str:
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
        if p.transition.any():
            lines.append(f"The first {int(p.transition.sum())} frames move smoothly from the reference's own pose.")
        if step.driving_video and p.video_info is not None and p.video_info.has_audio:
            note = self.audio_note(step)
            lines.append(note or "The driving video's audio will be added to the result, aligned to the clip.")
        if generation is not None:
            # Tiny mode caps the size; the estimate is for the real model at the size the visitor asked for.
            area = step.settings.requested_area or step.settings.max_area
            height, width = generation_size(*step.reference.shape[:2], area)
            estimate = self.estimate(p.num_frames, height, width, generation)
            lines.append(f"Generation estimate for {width}x{height}: {estimate.describe()}.")
        lines += [f"Warning: {w}" for w in step.warnings]
        return "\n\n".join(lines)

    # ------------------------------------------------------------------ generation
    def generate_frames(self, reference: np.ndarray, positive: np.ndarray, negative: np.ndarray,
                        settings: GenerationSettings, job_id: str | None = None,
                        progress: Callable[[int, int, str], None] | None = None) -> np.ndarray:
        """Runs the pipeline; returns (N, H, W, 3) uint8. Raises GenerationCancelled when the job is cancelled.

        This is the GPU part: its arguments are plain arrays and settings, so ZeroGPU can send them to its worker.
        """
        import torch

        pipe = self.runtime.pipe
        steps = int(settings.num_inference_steps)
        height, width = positive.shape[1:3]
        inject_oom = self.faults.take_oom(settings.seed)

        def on_step(pipeline, i, t, tensors):
            if inject_oom:  # tiny-mode fault injection (STEADYDANCER_FAULT): fail as CUDA would, inside the loop
                raise torch.OutOfMemoryError(
                    f"CUDA out of memory after denoising step {i + 1} of {steps} (injected by STEADYDANCER_FAULT)")
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
                # Noise drawn on the CPU: the same seed gives the same video on any device.
                generator = torch.Generator("cpu").manual_seed(int(settings.seed))
                output = pipe(
                    image=reference,
                    pose_video=positive,
                    negative_pose_video=negative,
                    prompt=settings.prompt,
                    negative_prompt=settings.negative_prompt or None,
                    height=height,
                    width=width,
                    num_frames=positive.shape[0],
                    num_inference_steps=steps,
                    guidance_scale=float(settings.guidance_scale),
                    pose_guidance_scale=float(settings.pose_guidance_scale),
                    pose_guidance_window=tuple(float(v) for v in settings.pose_guidance_window),
                    shift=float(settings.shift),
                    generator=generator,
                    output_type="np",
                    callback_on_step_end=on_step,
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
        frames = np.clip(np.rint(output.frames[0] * 255.0), 0, 255).astype(np.uint8)
        return frames

    def interrupt(self, job_id: str) -> bool:
        """Cancels `job_id`; stops the pipeline after its current step when that job is the one running."""
        known = self.cancels.cancel(job_id)
        if known and self._running_job == job_id:
            self.runtime.pipe.interrupt_generation()
        return known

    # ------------------------------------------------------------------ outputs
    def audio_note(self, step: PoseStep) -> str | None:
        """Why the audio is left out, or None when it is used."""
        p = step.prepared
        if not step.settings.real_time and p.source_fps and abs(p.source_fps - OUTPUT_FPS) > 0.05:
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

    def finish(self, step: PoseStep, frames: np.ndarray, settings: GenerationSettings, seconds: float,
               out_dir: str | None = None, audio: AudioClip | None | bool = True) -> AnimateResult:
        """Writes the result. `audio`: True reads it from the driving video now; or the clip `output_audio` read
        before the generation (the app does that, so a long generation never needs the upload again)."""
        out = out_dir or self.new_output_dir()
        if audio is True:
            audio = self.output_audio(step, len(frames))
        if self.tiny:
            frames = stamp(frames, "TINY MODE - NOISE")
        video = write_mp4(os.path.join(out, f"steadydancer_seed{settings.seed}.mp4"), frames, OUTPUT_FPS, audio=audio)
        lines = [f"**{TINY_NOTICE}**"] if self.tiny else []
        lines.append(
            f"{len(frames)} frames at {frames.shape[2]}x{frames.shape[1]}, {OUTPUT_FPS} fps "
            f"({len(frames) / OUTPUT_FPS:.2f} s), seed {settings.seed}, {settings.num_inference_steps} steps, "
            f"generated in {format_seconds(seconds)}" + (", with the driving video's audio." if audio else ".")
        )
        lines += [f"Warning: {w}" for w in step.warnings]
        return AnimateResult(video, int(settings.seed), "\n\n".join(lines), audio is not None, seconds)
