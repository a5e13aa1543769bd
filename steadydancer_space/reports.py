"""The reports a visitor reads (markdown): the GPU estimate, what the pose step made, and what a generation made."""

import numpy as np

from steadydancer.defaults import OUTPUT_FPS

from .estimate import ZEROGPU_DAILY_QUOTA, format_seconds
from .outputs import audio_note
from .plan import JobPlan
from .poses import REFERENCE_KEYPOINTS_NOTE, PoseStep
from .runtime import TINY_NOTICE


SPEED_WORDS = {"fast": "fast", "quality": "quality", "custom": "custom settings"}


def about(seconds: float) -> str:
    """A duration as a visitor reads an estimate: "40 s", "1 min", "3 min"."""
    if seconds < 55:
        return f"{max(10, int(round(seconds / 10.0)) * 10)} s"
    return f"{max(1, int(round(seconds / 60.0)))} min"


def job_gpu_seconds(plan: JobPlan) -> float:
    """The expected GPU time of the whole job (every window of a long video)."""
    return plan.num_windows * (plan.estimate.transformer_seconds + plan.estimate.other_seconds)


def plain_estimate(plan: JobPlan, tiny: bool = False) -> str:
    """The estimate in a visitor's words, the technical line folded under it (markdown with a <details>)."""
    preset = SPEED_WORDS.get(plan.sampler.preset, plan.sampler.preset)
    what = f"{preset}, {plan.num_frames} frames at {plan.request.pose.resolution}"
    if plan.windowed:
        what += f", made in {plan.num_windows} parts"
    text = f"**About {about(job_gpu_seconds(plan))} of GPU time** ({what})."
    if plan.estimate.quota_seconds is not None:
        text += f" Free accounts have {about(ZEROGPU_DAILY_QUOTA['free accounts'])} a day."
    if plan.over_limit:
        text += (f" **Too long for this Space** (at most {about(plan.max_gpu_seconds)} per part): choose Fast, "
                 "fewer frames or a lower resolution.")
    if tiny:
        text += " This test instance runs on the CPU at a small size, so it takes its own time."
    return text + f"\n\n<details><summary>How this is estimated</summary>\n\n{describe_estimate(plan)}\n</details>"


def describe_estimate(plan: JobPlan) -> str:
    """The GPU time of `plan` (one call, and the windows' total when it runs in several)."""
    estimate = plan.estimate
    text = f"**{plan.width}x{plan.height}, {plan.num_frames} frames**: GPU time {estimate.describe()}"
    if plan.windowed:
        windows = plan.num_windows
        text += (f" per window; {windows} windows of {plan.window_frames} frames, each its own GPU call: about "
                 f"{format_seconds(windows * (estimate.transformer_seconds + estimate.other_seconds))}"
                 + (f" and {format_seconds(windows * estimate.quota_seconds)} of quota"
                    if estimate.quota_seconds is not None else "") + " in all")
    text += "." + ("" if plan.ranks == "1 rank" else f" Runs on {plan.ranks}, which the time above counts.")
    if plan.over_limit:
        text += f" Over this app's limit of {format_seconds(plan.max_gpu_seconds)}."
    return text


def pose_report(plan: JobPlan, step: PoseStep, tiny: bool) -> str:
    """What the Extract button made, with the estimate of the generation that would follow."""
    p = step.prepared
    lines = [f"**{TINY_NOTICE}**"] if tiny else []
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
        lines.append(audio_note(step) or "The driving video's audio will be added to the result, aligned to the clip.")
    lines.append("Generation estimate: " + describe_estimate(plan))
    lines += [f"Warning: {w}" for w in step.warnings]
    return "\n\n".join(lines)


def result_report(plan: JobPlan, step: PoseStep, frames: np.ndarray, has_audio: bool, timings: dict[str, float],
                  tiny: bool) -> str:
    sampler, options = plan.sampler, plan.request.pose
    lines = [f"**{TINY_NOTICE}**"] if tiny else []
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
        + ("" if plan.ranks == "1 rank" else f" Ran on {plan.ranks}.")
    )
    if step.reference_from_keypoints:
        lines.append(REFERENCE_KEYPOINTS_NOTE)
    lines.append("Time: " + ", ".join(f"{stage} {format_seconds(seconds)}" for stage, seconds in timings.items())
                 + f" ({format_seconds(sum(timings.values()))} in all).")
    lines += [f"Warning: {w}" for w in step.warnings]
    return "\n\n".join(lines)
