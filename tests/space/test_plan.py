"""The request resolved once (`steadydancer_space.plan`): the sampler that runs is the one every report prices."""

import re

import pytest

from steadydancer.fidelity import get_fidelity_mode
from steadydancer.scheduling import transformer_passes
from steadydancer.sizing import RESOLUTIONS

from helpers.paths import EXAMPLES



@pytest.fixture(scope="module")
def service(tmp_path_factory):
    from steadydancer_space.config import AppConfig
    from steadydancer_space.runtime import load_runtime
    from steadydancer_space.service import AnimationService

    runtime = load_runtime(AppConfig(tiny=True))
    try:
        yield AnimationService(runtime, output_dir=str(tmp_path_factory.mktemp("outputs")))
    finally:
        runtime.tiny_dir.cleanup()


def released_passes(resolution: str) -> int:
    settings = get_fidelity_mode("released").sampler_kwargs(RESOLUTIONS[resolution])
    return transformer_passes(settings["num_inference_steps"], settings["guidance_scale"],
                              settings["pose_guidance_scale"], tuple(settings["pose_guidance_window"]))


def reported_passes(report: str) -> int:
    return int(re.search(r"\((\d+) transformer passes", report).group(1))


def test_extract_report_of_a_released_request_prices_the_released_steps(service, tmp_path):
    values = dict(keypoints=str(EXAMPLES / "dance_wave.json"),
                  reference_keypoints=str(EXAMPLES / "ref_red_dress.json"), num_frames=17, resolution="480p")
    released = service.plan(service.request(str(EXAMPLES / "ref_red_dress.png"), fidelity="released", **values))
    fast = service.plan(service.request(str(EXAMPLES / "ref_red_dress.png"), preset="fast", **values))
    assert released.request.sampler.num_inference_steps == fast.sampler.num_inference_steps  # the visitor's preset

    report = service.extract(released, str(tmp_path)).report
    assert reported_passes(report) == released_passes("480p") != reported_passes(service.extract(fast, str(tmp_path)).report)
    # The same figures as a custom request asking for the released settings outright.
    settings = get_fidelity_mode("released").sampler_kwargs(RESOLUTIONS["480p"])
    custom = service.plan(service.request(
        str(EXAMPLES / "ref_red_dress.png"), preset="custom", steps=settings["num_inference_steps"],
        guidance_scale=settings["guidance_scale"], pose_guidance_scale=settings["pose_guidance_scale"],
        window_start=settings["pose_guidance_window"][0], window_end=settings["pose_guidance_window"][1],
        shift=settings["shift"], **values))
    assert custom.estimate == released.estimate


def test_a_plan_is_windowed_past_one_window_and_prices_one_call(service):
    window = service.planner.config.window_frames
    short = service.plan(service.request(num_frames=window))
    long = service.plan(service.request(num_frames=2 * window + 3))
    assert not short.windowed and long.windowed and long.num_windows >= 3
    assert long.estimate == short.estimate  # each window is its own GPU call of the same size


def test_over_limit_is_refused_naming_the_fast_preset(service):
    from steadydancer_space.uploads import InputError

    plan = service.plan(service.request(preset="quality", num_frames=81))
    limited = type(plan)(**{**plan.__dict__, "max_gpu_seconds": plan.estimate.seconds - 1})
    assert limited.over_limit and not plan.over_limit
    with pytest.raises(InputError, match="Choose the fast preset"):
        limited.require_within_limit()
