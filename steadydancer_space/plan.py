"""A request resolved once: the sampler that will run, the sizes, the windows and the GPU time of each call.

`Planner.resolve` is the border between what a visitor asked for and what runs; everything after it (checks, poses,
the GPU calls, the reports, ZeroGPU's duration) reads the `JobPlan` and works none of it out again.
"""

from dataclasses import dataclass, replace

from steadydancer.fidelity import get_fidelity_mode
from steadydancer.flops import CONFIG_14B
from steadydancer.long_video import plan_windows
from steadydancer.memory import MemoryPlanError, plan_memory
from steadydancer.roofline import GPUS
from steadydancer.scheduling import passes_per_step

from .config import ZEROGPU_MAX_SECONDS
from .estimate import GpuEstimate, detect_gpu, estimate_gpu_seconds, format_seconds
from .request import AnimationRequest, PoseOptions, SamplerOptions
from .uploads import InputError, Limits, reference_size
from .zerogpu import gpu_size, pose_gpu_seconds, serves_ahead_of_time

# Before a reference is given, estimates assume a landscape frame (the estimate depends on the area, not the aspect).
LANDSCAPE = (576, 1024)
# Defaults offered, best first: the first that fits the GPU-time cap (with a margin) is the UI's default.
DEFAULT_CHOICES = (("576p", 81), ("480p", 81), ("576p", 49), ("480p", 49), ("480p", 33), ("480p", 17))
DEFAULT_MARGIN = 0.75


def effective_sampler(request: AnimationRequest) -> SamplerOptions:
    """The sampler a request runs with: its own, or the released command line's in the released fidelity mode."""
    if request.pose.fidelity == "default":
        return request.sampler
    settings = get_fidelity_mode(request.pose.fidelity).sampler_kwargs(request.pose.area)
    return replace(request.sampler, preset="quality", num_inference_steps=settings["num_inference_steps"],
                   guidance_scale=settings["guidance_scale"], pose_guidance_scale=settings["pose_guidance_scale"],
                   pose_guidance_window=tuple(settings["pose_guidance_window"]), shift=settings["shift"])


@dataclass(frozen=True)
class JobPlan:
    """One job as it will run. Picklable: ZeroGPU ships it to its GPU worker with the arrays."""

    request: AnimationRequest
    sampler: SamplerOptions  # what runs (not always what was asked: see `effective_sampler`)
    height: int  # the size the visitor chose, for the reference's aspect; what the estimate prices
    width: int
    run_area: int  # the pixel budget generated at (tiny mode caps it to keep CPUs quick)
    window_frames: int
    num_windows: int  # GPU calls: 1, or the windows of a long video
    batch_guidance: bool  # the guidance passes of a step as one batch (the memory plan says whether they fit)
    estimate: GpuEstimate  # one GPU call: the whole video, or one window
    max_gpu_seconds: float | None  # what one call may ask for (None: no limit)
    ranks: str = "1 rank"  # the GPUs that run it together and how (`steadydancer.parallel.ParallelLayout`)

    @property
    def num_frames(self) -> int:
        return self.request.pose.num_frames

    @property
    def windowed(self) -> bool:
        return self.num_windows > 1

    @property
    def over_limit(self) -> bool:
        return self.max_gpu_seconds is not None and self.estimate.seconds > self.max_gpu_seconds

    def require_within_limit(self) -> None:
        if self.over_limit:
            raise InputError(
                f"This request needs about {format_seconds(self.estimate.seconds)} of GPU time; this app allows "
                f"{format_seconds(self.max_gpu_seconds)}. Choose the fast preset, fewer frames or a lower resolution."
            )


class Planner:
    """What this deployment runs requests with: the GPU the estimates price, the window length, the caps."""

    def __init__(self, config, gpu: str, transformer_config: dict = CONFIG_14B, loaded_plan: str | None = None,
                 limits: Limits | None = None):
        self.config = config
        self.gpu = gpu
        self.transformer_config = transformer_config
        self.loaded_plan = loaded_plan  # the memory plan the weights were placed by (None: any)
        self.cluster = None  # `steadydancer_space.distributed.Cluster` under torchrun
        self.limits = limits or config.limits
        # The ZeroGPU recipe (`zerogpu`): float8 compute where the card has it, guidance passes one by one.
        self.ahead_of_time = serves_ahead_of_time(config)

    @classmethod
    def for_runtime(cls, runtime) -> "Planner":
        config = runtime.config
        # Tiny mode runs on the CPU, but its estimates describe the real model on a typical GPU (ZeroGPU, real or
        # simulated, is planned for as such).
        detected = "h100" if runtime.tiny and not config.zerogpu else detect_gpu(config.zerogpu, gpu_size(config))
        gpu = config.gpu if config.gpu != "auto" else detected
        transformer = CONFIG_14B if runtime.tiny else dict(runtime.pipe.transformer.config)
        loaded = runtime.memory_plan.name if runtime.memory_plan is not None else None
        forced = None if config.memory_plan == "auto" else config.memory_plan
        return cls(config, gpu, transformer, loaded or forced)

    @property
    def max_gpu_seconds(self) -> float | None:
        """The GPU time one call may ask for: STEADYDANCER_MAX_GPU_SECONDS, else ZeroGPU's ceiling on ZeroGPU."""
        if self.config.max_gpu_seconds is not None:
            return self.config.max_gpu_seconds
        return ZEROGPU_MAX_SECONDS if self.config.zerogpu else None

    def memory_plan(self, num_frames: int, height: int, width: int, sampler: SamplerOptions):
        """The memory plan of one GPU call on this deployment's GPU (None on a CPU); `InputError` naming the card
        and the need when no plan fits."""
        if self.gpu == "cpu":
            return None
        card = GPUS[self.gpu]
        preset = "fast" if sampler.guidance_scale == 1.0 else "quality"  # one pass more per step with text guidance
        try:
            plan = plan_memory(card.memory_gb, card.compute_capability, height=height, width=width,
                               num_frames=min(num_frames, self.config.window_frames), preset=preset,
                               force=self.loaded_plan, float8_for_speed=self.ahead_of_time, shards=self.config.ranks)
        except MemoryPlanError as error:
            raise InputError(str(error)) from None
        # One pass at a time never needs more memory than a batch of them.
        return replace(plan, batch_guidance=False) if self.ahead_of_time else plan

    def estimate(self, num_frames: int, height: int, width: int, sampler: SamplerOptions,
                 memory_plan=None) -> GpuEstimate:
        """One GPU call: the whole video, or one window of a longer one."""
        if memory_plan is None:
            memory_plan = self.memory_plan(num_frames, height, width, sampler)
        return estimate_gpu_seconds(
            min(num_frames, self.config.window_frames), height, width, sampler.num_inference_steps,
            sampler.guidance_scale, sampler.pose_guidance_scale, sampler.pose_guidance_window, self.gpu,
            memory_plan=memory_plan, transformer_config=self.transformer_config,
            speedup=self._layout().speedup_for(passes_per_step(
                sampler.num_inference_steps, sampler.guidance_scale, sampler.pose_guidance_scale,
                sampler.pose_guidance_window)),
        )

    def _layout(self):
        from steadydancer.parallel import ParallelLayout

        active = self.cluster is not None and self.cluster.active
        return self.cluster.layout if active else ParallelLayout(1, 1, 1)

    def num_windows(self, num_frames: int) -> int:
        window = self.config.window_frames
        return 1 if num_frames <= window else len(plan_windows(num_frames, window))

    def resolve(self, request: AnimationRequest) -> JobPlan:
        """The plan of `request`, sized from the reference's header (a landscape frame when there is none yet)."""
        sampler = effective_sampler(request)
        reference = reference_size(request.reference, self.limits) if request.reference else LANDSCAPE
        height, width = request.pose.generation_size(*reference)
        area, frames = request.pose.area, request.pose.num_frames
        memory = self.memory_plan(frames, height, width, sampler)
        estimate = self.estimate(frames, height, width, sampler, memory)
        if self.ahead_of_time:  # ZeroGPU: the poses are a GPU call of their own
            estimate = replace(estimate, pose_seconds=pose_gpu_seconds(frames))
        return JobPlan(
            request=request, sampler=sampler, height=height, width=width,
            run_area=min(area, self.config.tiny_max_area) if self.config.tiny else area,
            window_frames=self.config.window_frames, num_windows=self.num_windows(frames),
            batch_guidance=memory is None or memory.batch_guidance,
            estimate=estimate,
            max_gpu_seconds=self.max_gpu_seconds, ranks=self._layout().describe(),
        )

    def default_choices(self, margin: float = DEFAULT_MARGIN) -> tuple[str, int]:
        """(resolution, frames) offered by default: the largest that fits `margin` of the GPU-time cap with the
        default (fast) preset."""
        limit = self.max_gpu_seconds
        for resolution, frames in DEFAULT_CHOICES:
            frames = min(frames, self.config.max_frames)
            height, width = PoseOptions(resolution=resolution).generation_size(*LANDSCAPE)
            if limit is None or self.estimate(frames, height, width, SamplerOptions()).seconds <= margin * limit:
                return resolution, frames
        return DEFAULT_CHOICES[-1]
