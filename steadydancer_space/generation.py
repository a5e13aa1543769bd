"""The GPU part of a job: the pipeline over prepared arrays, whole or window by window, one generation at a time.

Its arguments are the `JobPlan` and plain arrays, so ZeroGPU can ship them to its worker; cancels arrive through
`CancelRegistry`'s marker files, which that worker sees too.
"""

import contextlib
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from steadydancer.parallel import DONE, OUT_OF_MEMORY, RankFailed
from steadydancer.pose import PoseModelInputs
from steadydancer.video_io import to_uint8_frames

from .cancellation import CancelRegistry, GenerationCancelled
from .errors import WorkerLost, free_accelerator_memory, is_collective_failure
from .faults import FaultPlan, GpuStats, failing_forward
from .outputs import write_frames_preview, write_preview
from .plan import JobPlan

# progress(done, total, description): `total` None when unknown (the app shows an indeterminate bar).
Progress = Callable[[int, int | None, str], None]


@dataclass
class GeneratedFrames:
    """What the GPU part hands back (picklable): (N, H, W, 3) uint8 frames, seconds by stage."""

    frames: np.ndarray
    timings: dict[str, float]


class Generator:
    def __init__(self, runtime, cancels: CancelRegistry, faults: FaultPlan):
        self.runtime = runtime
        self.cancels = cancels
        self.faults = faults
        self.cluster = None  # `steadydancer_space.distributed.Cluster` under torchrun
        self.stats = GpuStats()
        self.running_job: str | None = None
        self._long_jobs: dict = {}  # job id -> its LongVideo while it runs

    def _step_callback(self, plan: JobPlan, job_id: str | None, progress: Progress | None, preview_dir: str | None,
                       step_ends: list[float]):
        import torch

        steps = plan.sampler.num_inference_steps
        inject_oom = self.faults.take_oom(plan.sampler.seed)

        def on_step(pipeline, i, t, tensors):
            step_ends.append(time.perf_counter())
            failure = None
            try:
                if inject_oom:  # tiny-mode fault injection (STEADYDANCER_FAULT): fail as CUDA would, in the loop
                    raise torch.OutOfMemoryError(
                        f"CUDA out of memory after denoising step {i + 1} of {steps} (injected by STEADYDANCER_FAULT)")
                if preview_dir is not None:
                    write_preview(tensors["denoised"], i, preview_dir)
                if progress is not None:
                    progress(i + 1, steps, f"Denoising: step {i + 1} of {steps}")
            except Exception as error:  # raised after the vote, so no other rank waits for this one's
                failure = error
            if self.cancelled(job_id, failure):
                pipeline.interrupt_generation()
                print(f"steadydancer: job {job_id} cancelled after step {i + 1} of {steps}", flush=True)
                raise GenerationCancelled()
            return tensors

        return on_step

    def cancelled(self, job_id: str | None, failure: Exception | None = None) -> bool:
        """Whether to stop after this step; with several ranks, a vote every rank takes at the same step. Raises
        `failure` (this rank's own, after the vote), or `RankFailed` when another rank failed after the step."""
        cancelled = job_id is not None and self.cancels.cancelled(job_id)
        failed = DONE
        if self._together():
            cancelled, failed = self.cluster.agree(cancelled, failure)
        if failure is not None:
            raise failure
        if failed != DONE:
            raise RankFailed("another rank (after a step)", out_of_memory=failed == OUT_OF_MEMORY)
        return cancelled

    def _worker_lost(self, error: Exception) -> Exception:
        """`WorkerLost` when `error` is another rank's failure (the app then goes on alone); else raises `error`."""
        if not (self._together() and is_collective_failure(error)):
            raise error
        return self.cluster.fail(self.runtime.pipe, error)

    def _together(self) -> bool:
        return self.cluster is not None and self.cluster.active

    def _check_ranks(self) -> None:
        """Refuses a job when a rank was lost and this one holds only a share of the weights."""
        if self.cluster is not None and not self.cluster.active and not self.cluster.can_serve_alone:
            raise WorkerLost(None, alone=False)

    def _encodes(self) -> bool:
        """Whether this process encodes the inputs and decodes the result: with several ranks, rank 0 only (the
        pipeline shares what it encodes)."""
        return not self._together() or self.cluster.leader

    def _injected_pass_fault(self):
        """Tiny mode's `oom_rank` fault: this rank's transformer fails in its second forward of the job."""
        rank = self.cluster.rank if self.cluster is not None else 0
        if not self.faults.take_rank_oom(rank):
            return contextlib.nullcontext()
        message = f"CUDA out of memory in a transformer pass on rank {rank} (injected by STEADYDANCER_FAULT)"
        return failing_forward(self.runtime.pipe.transformer, 1, message)

    def _whole_job(self):
        """With several ranks, rank 0 runs one job at a time from sending it to its end: the others run its jobs in
        order, each whole (a long video's windows too), so two jobs' collectives never interleave."""
        if self._together() and self.cluster.leader:
            return self.cluster.job_lock
        return contextlib.nullcontext()

    def _send(self, job: tuple) -> None:
        """Rank 0 hands a GPU call to the other ranks, which run it with it."""
        if self._together() and self.cluster.leader:
            self.cluster.send(job)

    def _pipeline_kwargs(self, plan: JobPlan) -> dict:
        """The sampler's settings, the noise and the prompts' embeddings (from the cache when seen before)."""
        import torch

        sampler = plan.sampler
        # As released, the noise is drawn on the GPU; --cpu-noise draws it on the CPU (same noise anywhere).
        noise = (dict(generator=torch.Generator("cpu").manual_seed(sampler.seed)) if self.runtime.config.cpu_noise
                 else dict(seed=sampler.seed))
        prompts = {}
        if self._encodes():
            prompts = self.runtime.prompts.pipeline_kwargs(sampler.prompt, sampler.negative_prompt,
                                                           guidance_scale=sampler.guidance_scale)
        return dict(**noise, **prompts, **asdict(sampler.settings), batch_guidance=plan.batch_guidance)

    def generate_frames(self, plan: JobPlan, reference: np.ndarray, poses: PoseModelInputs, job_id: str | None = None,
                        progress: Progress | None = None, preview_dir: str | None = None) -> GeneratedFrames:
        """The whole video in one call. With `preview_dir`, each step writes a preview of the video it predicts there
        (a file, so the app sees it from a ZeroGPU worker too). Raises GenerationCancelled once `job_id` is."""
        import torch

        pipe = self.runtime.pipe
        num_frames, _, height, width = poses.pose_video.shape
        step_ends: list[float] = []
        on_step = self._step_callback(plan, job_id, progress, preview_dir, step_ends)
        self._check_ranks()
        # One at a time: a cancelled one may still finish its step.
        with self._whole_job(), self.runtime.lock, self.stats.track():
            # Cancelled while waiting: never sent. Once sent, a cancel is agreed by every rank after a step.
            if job_id is not None and self.cancels.cancelled(job_id):
                raise GenerationCancelled()
            self._send(("frames", plan, reference, poses))
            self.running_job, failure = job_id, None
            try:
                if progress is not None:
                    progress(0, plan.sampler.num_inference_steps, "Encoding the reference, the prompt and the poses")
                start = time.perf_counter()
                self.runtime.presets.use("fast" if plan.sampler.uses_distill_lora else "quality")
                with self._injected_pass_fault():
                    output = pipe(image=reference, **poses.pipeline_kwargs(), **self._pipeline_kwargs(plan),
                                  height=height, width=width, num_frames=num_frames,
                                  output_type="np" if self._encodes() else "latent", callback_on_step_end=on_step,
                                  callback_on_step_end_tensor_inputs=["latents", "denoised"])
            except (GenerationCancelled, torch.OutOfMemoryError, RankFailed) as error:
                # The traceback holds the failed step's frames and tensors: drop it so the memory can be released.
                failure = error.with_traceback(None)
            except Exception as error:
                failure = self._worker_lost(error)
            finally:
                self.running_job = None
                pipe.maybe_free_model_hooks()
            if failure is not None:
                free_accelerator_memory()
                raise failure
            if job_id is not None and self.cancels.cancelled(job_id):  # interrupted between two steps
                del output
                free_accelerator_memory()
                raise GenerationCancelled()
        timings = _stage_timings(start, step_ends, time.perf_counter())
        if not self._encodes():  # a rank's share of the job: rank 0 decodes and keeps the video
            return GeneratedFrames(np.empty((0, height, width, 3), np.uint8), timings)
        return GeneratedFrames(to_uint8_frames(output.frames), timings)

    def generate_long(self, plan: JobPlan, reference: np.ndarray, prepared, job_id: str,
                      run_window_on_gpu: Callable[..., tuple], progress: Progress | None = None,
                      preview_dir: str | None = None) -> GeneratedFrames:
        """A video longer than a window (`steadydancer.long_video.LongVideo`): each window continues from the last
        frame of the one before and keeps the photo as its identity anchor; window i is seeded with seed + i. What a
        window carries to the next comes back from each GPU call (`run_window_on_gpu`, `generate_window` wrapped).
        Progress counts the steps of the whole job (one bar for every window); with `preview_dir`, each finished
        window leaves a preview of its frames there."""

        def report(window, windows, done, steps):
            if progress is not None:
                progress(window * steps + done, windows * steps, f"Window {window + 1} of {windows}, step {done} "
                         f"of {steps}")

        self._check_ranks()
        with self._whole_job():
            if self.cancels.cancelled(job_id):  # cancelled while waiting: never sent
                raise GenerationCancelled()
            self._send(("long", plan, reference, prepared, job_id))
            return self._windows(plan, reference, prepared, job_id, run_window_on_gpu, report, preview_dir)

    def _windows(self, plan: JobPlan, reference: np.ndarray, prepared, job_id: str,
                 run_window_on_gpu: Callable[..., tuple], report, preview_dir: str | None) -> GeneratedFrames:
        from steadydancer.long_video import LongVideo

        sampler = plan.sampler
        video = LongVideo(
            self.runtime.pipe, reference, prepared, prepared.num_frames, segment_frame_length=plan.window_frames,
            prompt=sampler.prompt, negative_prompt=sampler.negative_prompt, settings=sampler.settings,
            batch_guidance=plan.batch_guidance, seed=sampler.seed,
            noise_device="cpu" if self.runtime.config.cpu_noise else None,
            callback=report, cancel=lambda: self.cancelled(job_id),
        )
        self._long_jobs[job_id] = video
        start, windows = time.perf_counter(), []
        try:
            for index in range(video.num_windows):
                frames, video.state = run_window_on_gpu(plan, job_id, index, video.state)
                windows.append(frames)
                if preview_dir is not None and index + 1 < video.num_windows:
                    write_frames_preview(frames, index, preview_dir)
        finally:
            self._long_jobs.pop(job_id, None)
        return GeneratedFrames(np.concatenate(windows), {"generating": time.perf_counter() - start})

    def generate_window(self, plan: JobPlan, job_id: str, index: int, state) -> tuple[np.ndarray, object]:
        """One window of a long video: (its new frames as uint8, the state for the next window)."""
        from steadydancer.long_video import LongVideoCancelled

        video = self._long_jobs[job_id]
        video.state = state
        with self.runtime.lock, self.stats.track():
            self.running_job = job_id
            try:
                self.runtime.presets.use("fast" if plan.sampler.uses_distill_lora else "quality")
                frames = video.run_window(index)
            except LongVideoCancelled:
                raise GenerationCancelled() from None
            except Exception as error:
                raise self._worker_lost(error) from None
            finally:
                self.running_job = None
        return to_uint8_frames(frames), video.state

    def interrupt(self, job_id: str) -> None:
        """Cancels `job_id`: pose detection stops after the current frame, denoising after the current step."""
        self.cancels.cancel(job_id)
        # With several ranks the vote after the step stops them all; stopping here alone would leave the others
        # waiting for this rank's share of the next step.
        if self.running_job == job_id and not self._together():
            self.runtime.pipe.interrupt_generation()


def _stage_timings(start: float, step_ends: list[float], end: float) -> dict[str, float]:
    """Encoding, denoising and decoding seconds. The step callback runs after each step, so the encoders' time is
    the first interval less one step."""
    if not step_ends:
        return {"encoding": 0.0, "denoising": 0.0, "decoding": end - start}
    step = (step_ends[-1] - step_ends[0]) / (len(step_ends) - 1) if len(step_ends) > 1 else 0.0
    encoding = max(0.0, step_ends[0] - start - step)
    return {"encoding": encoding, "denoising": step_ends[-1] - start - encoding, "decoding": end - step_ends[-1]}
