"""The Space's two jobs, top to bottom: `extract` (poses before any GPU time) and `animate` (check, poses, the GPU
part, writing). `app.py` maps UI values to a `JobPlan` (`request` then `plan`), runs these in a worker thread and
wraps the GPU part for ZeroGPU; each step is a module of its own."""

import json
import os
import time
from dataclasses import dataclass
from typing import Callable

from .cancellation import CancelRegistry, GenerationCancelled
from .faults import FaultPlan
from .generation import GeneratedFrames, Generator, Progress
from .outputs import OUTPUT_MAX_AGE_SECONDS, Workspaces, output_audio, stamp, write_pose_video, write_result
from .plan import JobPlan, Planner
from .poses import PoseStep, PoseStepCache, overlay, run_pose_step
from .reports import pose_report, result_report
from .request import POSE_PARAMETERS, AnimationRequest, PoseOptions, SamplerOptions, number_fields
from .runtime import Runtime
from .uploads import InputError


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
    pose_video: str
    side_by_side: str  # photo | poses | result, with the audio
    seed: int
    report: str
    recipe: dict  # the API values that make this video again
    timings: dict[str, float]  # seconds by stage
    warnings: list[str]


class AnimationService:
    def __init__(self, runtime: Runtime, output_dir: str | None = None, faults: FaultPlan | None = None,
                 output_max_age: float = OUTPUT_MAX_AGE_SECONDS):
        self.runtime = runtime
        self.tiny = runtime.tiny
        self.limits = runtime.config.limits
        self.fields = number_fields(runtime.config.max_frames, self.limits)
        self.planner = Planner.for_runtime(runtime)
        self.workspaces = Workspaces(output_dir, output_max_age)
        self.cancels = CancelRegistry(self.workspaces.cancels_dir)
        self.generator = Generator(runtime, self.cancels, faults or FaultPlan.for_mode(runtime.config.faults,
                                                                                      runtime.tiny))
        self.pose_cache = PoseStepCache(size=2)
        # ZeroGPU: the pose step as its own short GPU call (app.py sets it); it runs `detect_poses` there.
        self.poses_on_gpu: Callable[[JobPlan], PoseStep] | None = None

    # ------------------------------------------------------------------ the border
    def request(self, reference=None, driving_video=None, keypoints=None, *, reference_keypoints=None,
                random_seed=None, **values) -> AnimationRequest:
        """An `AnimationRequest` from API values (by API parameter name; absent ones take their defaults)."""
        pose = PoseOptions.parse(self.fields, **{k: values.pop(k) for k in POSE_PARAMETERS if k in values})
        sampler = SamplerOptions.parse(self.fields, self.limits, random_seed=random_seed, **values)
        return AnimationRequest(reference or None, driving_video or None, keypoints or None, pose, sampler,
                                reference_keypoints or None)

    def plan(self, request: AnimationRequest) -> JobPlan:
        """The request resolved once (`steadydancer_space.plan`)."""
        return self.planner.resolve(request)

    def check(self, plan: JobPlan) -> None:
        """`InputError` naming the first problem, before any pose detection or GPU time: the files, the pipeline's
        own `check_inputs` (its ValueErrors name the argument), then the GPU-time limit."""
        plan.request.require_files()
        sampler = plan.sampler
        try:
            self.runtime.pipe.check_inputs(
                height=plan.height, width=plan.width, num_frames=plan.num_frames,
                num_inference_steps=sampler.num_inference_steps, guidance_scale=sampler.guidance_scale,
                pose_guidance_scale=sampler.pose_guidance_scale, pose_guidance_window=sampler.pose_guidance_window,
                shift=sampler.shift, has_negative_pose=True,
            )
        except ValueError as error:
            raise InputError(str(error)) from None
        plan.require_within_limit()

    # ------------------------------------------------------------------ the two jobs
    def poses(self, plan: JobPlan, progress: Progress | None = None, job_id: str | None = None) -> PoseStep:
        if self.poses_on_gpu is not None:
            return self.poses_on_gpu(plan)
        return self.detect_poses(plan, progress, job_id)

    def detect_poses(self, plan: JobPlan, progress: Progress | None = None, job_id: str | None = None) -> PoseStep:
        def report(done, total):
            if job_id is not None and self.cancels.cancelled(job_id):
                raise GenerationCancelled()
            if progress is not None:
                progress(done, total, f"Detecting poses: frame {done}" + (f" of {total}" if total else ""))

        return run_pose_step(self.runtime.detector, plan.request, plan.run_area, cache=self.pose_cache,
                             progress=report, limits=self.limits, reference_checked=bool(plan.request.reference))

    def extract(self, plan: JobPlan, out_dir: str, progress: Progress | None = None) -> ExtractResult:
        """The Extract button: poses, their videos, the alignment overlay and the raw keypoints."""
        import PIL.Image

        step = self.poses(plan, progress)
        alignment = os.path.join(out_dir, "alignment.png")
        PIL.Image.fromarray(overlay(step.reference, step.prepared.positive[0])).save(alignment)
        poses_json = os.path.join(out_dir, "driving_poses.json")
        with open(poses_json, "w", encoding="utf-8") as f:
            json.dump(step.prepared.driving_poses.to_dict(), f)
        return ExtractResult(step, write_pose_video(step, out_dir, self.tiny),
                             write_pose_video(step, out_dir, self.tiny, negative=True), alignment, poses_json,
                             pose_report(plan, step, self.tiny))

    def animate(self, plan: JobPlan, job_id: str, out_dir: str, run_on_gpu: Callable[..., GeneratedFrames],
                run_window_on_gpu: Callable[..., tuple] | None = None, progress: Progress | None = None,
                warn: Callable[[str], None] | None = None) -> AnimateResult:
        """Check, poses, GPU part, writing. `run_on_gpu(plan, reference, poses, job_id)` is
        `Generator.generate_frames` as the app wraps it for ZeroGPU; a windowed plan runs each window through
        `run_window_on_gpu(plan, job_id, index, state)` (`Generator.generate_window`, wrapped likewise). `warn`
        receives the pose step's warnings before the GPU part starts. Raises `GenerationCancelled` once `job_id` is
        cancelled."""
        if self.cancels.cancelled(job_id):  # cancelled before it started
            raise GenerationCancelled()
        self.check(plan)
        start = time.perf_counter()
        step = self.poses(plan, progress, job_id)
        for note in step.warnings if warn is not None else ():
            warn(note)
        audio = output_audio(step)
        timings = {"poses": time.perf_counter() - start}
        if plan.windowed:
            generated = self.generator.generate_long(plan, step.reference, step.prepared, job_id,
                                                     run_window_on_gpu or self.generator.generate_window, progress,
                                                     preview_dir=out_dir)
        else:
            generated = run_on_gpu(plan, step.reference, step.prepared.model_inputs(), job_id)
        if progress is not None:
            progress(0, None, "Writing the video")
        start = time.perf_counter()
        frames = stamp(generated.frames, "TINY MODE - NOISE") if self.tiny else generated.frames
        video, side_by_side = write_result(frames, step, plan.sampler.seed, out_dir, audio, lossless=self.tiny)
        pose_video = write_pose_video(step, out_dir, self.tiny)
        timings = {**timings, **generated.timings, "writing": time.perf_counter() - start}
        report = result_report(plan, step, frames, audio is not None, timings, self.tiny)
        return AnimateResult(video, pose_video, side_by_side, plan.sampler.seed, report, plan.request.recipe(),
                             timings, step.warnings)

    def attach_cluster(self, cluster) -> None:
        """Several GPUs (`steadydancer_space.distributed`): the GPU part runs on every rank, estimates count them."""
        self.generator.cluster = self.planner.cluster = cluster

    def interrupt(self, job_id: str) -> None:
        self.generator.interrupt(job_id)
