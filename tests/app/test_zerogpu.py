"""The app configured as ZeroGPU `large` (simulated: SPACES_ZERO_GPU=1 in tiny mode, no real ZeroGPU here): its
defaults and examples fit the per-call cap with a margin, the estimate shows the quota, and a quality request over
the cap is refused with a message naming the fast preset."""

import pytest

pytest.importorskip("gradio_client")
from gradio_client import handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from helpers.app_launcher import launch_tiny_app  # noqa: E402
from helpers.paths import REPO  # noqa: E402

EXAMPLES = REPO / "examples"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    yield from launch_tiny_app(tmp_path_factory, "zerogpu", env={"SPACES_ZERO_GPU": "1"})


def defaults(client, endpoint):
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"][endpoint]
    return {p["parameter_name"]: p["parameter_default"] for p in info["parameters"] if p["parameter_has_default"]}


def test_the_default_request_fits_the_cap(client):
    animate = defaults(client, "/animate")
    assert animate["preset"] == "fast"
    estimate = {k: animate[k] for k in ("resolution", "num_frames", "steps", "guidance_scale", "pose_guidance_scale",
                                        "window_start", "window_end", "preset")}
    text = client.predict(reference=handle_file(str(EXAMPLES / "ref_red_dress.png")), **estimate,
                          api_name="/estimate")
    assert "zerogpu-large" in text and "Over this app's limit" not in text
    assert "of ZeroGPU quota (free accounts have 5 min 00 s a day)" in text
    video, _, _, report, *_ = client.predict(reference=handle_file(str(EXAMPLES / "ref_red_dress.png")),
                                             driving_video=None,
                                             keypoints=handle_file(str(EXAMPLES / "dance_wave.json")),
                                             api_name="/animate")
    assert video and f"{animate['num_frames']} frames" in report


def test_every_example_fits_the_cap(client):
    from steadydancer_space.examples import EXAMPLES as TABLE

    animate = defaults(client, "/animate")
    for example in TABLE:
        frames = min(example.num_frames, animate["num_frames"])
        text = client.predict(reference=handle_file(str(EXAMPLES / example.reference)), resolution=animate["resolution"],
                              num_frames=frames, preset="fast", api_name="/estimate")
        assert "GPU time" in text and "Over this app's limit" not in text, (example.label, text)


def test_a_quality_request_over_the_cap_names_the_fast_preset(client):
    with pytest.raises(AppError, match="Choose the fast preset"):
        client.predict(reference=handle_file(str(EXAMPLES / "ref_red_dress.png")), driving_video=None,
                       keypoints=handle_file(str(EXAMPLES / "dance_wave.json")), resolution="576p", num_frames=81,
                       preset="quality", api_name="/animate")


def test_a_long_video_is_one_gpu_call_a_window_each_under_the_cap(client):
    animate = defaults(client, "/animate")
    text = client.predict(reference=handle_file(str(EXAMPLES / "ref_red_dress.png")),
                          resolution=animate["resolution"], num_frames=321, preset="fast", api_name="/estimate")
    assert "per window; 4 windows of 81 frames, each its own GPU call" in text, text
    assert "Over this app's limit" not in text and "of quota in all" in text
