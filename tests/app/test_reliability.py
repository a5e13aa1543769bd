"""Reliability and security of the Space, from the outside: one `python app.py --tiny` per module, with small limits,
a queue of two and an injected out-of-memory fault, driven through `gradio_client` with bad files, out-of-range
numbers (also fuzzed with hypothesis), broken keypoint JSON, an OOM inside the denoising loop and a burst of
concurrent jobs. Every failure must reach the client as a message naming the problem (never a traceback, a server
path or a hang) and leave the app serving; the last test checks the server log holds no traceback at all.

Unit tests of the pieces (`errors`, `faults`, `uploads.load_keypoints`, weight safety, pinned revisions) come
first; they need no server."""

import json
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

from gradio_client import handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from helpers.app_launcher import launch_tiny_app  # noqa: E402
from helpers.limited_app import (APP_ENV, INTERNAL, MAX_FRAMES, MAX_PROMPT, MAX_STEPS, OOM_SEED, PAPER,  # noqa: E402
                                 REAL_TIME, assert_clean)
from helpers.paths import REPO  # noqa: E402
from steadydancer.video_io import probe_mp4, write_mp4  # noqa: E402

EXAMPLES = REPO / "examples"


# ---------------------------------------------------------------------- unit tests (no server)
def test_sanitize_and_error_mapping():
    import gradio as gr
    import torch

    from steadydancer_space.errors import (
        OOM_MESSAGE,
        GenerationCancelled,
        sanitize,
        to_user_error,
        user_errors,
    )
    from steadydancer.pose import NoPersonInReferenceError
    from steadydancer_space.uploads import InputError

    assert sanitize("cannot read /tmp/gradio/ab12/photo.png (bad)") == "cannot read photo.png (bad)"
    assert sanitize("see steadydancer/pose/keypoints.py") == "see steadydancer/pose/keypoints.py"
    assert sanitize("x\nTraceback (most recent call last):\n  File \"/a/b.py\"") == "x"
    assert to_user_error(InputError("steps must be between 1 and 80, got 500.")).message.startswith("steps must")
    assert to_user_error(NoPersonInReferenceError("no person was found")).message == "No person was found"
    assert to_user_error(torch.OutOfMemoryError("CUDA out of memory")).message == OOM_MESSAGE
    assert to_user_error(GenerationCancelled()).message == "Cancelled."
    internal = to_user_error(KeyError("/srv/secret/path"))
    assert INTERNAL in internal.message and "secret" not in internal.message

    @user_errors
    async def handler(a, request: gr.Request, progress=gr.Progress()):
        raise ValueError("internal detail")

    import inspect

    assert list(inspect.signature(handler).parameters) == ["a", "request", "progress"]
    assert inspect.iscoroutinefunction(handler)


def test_fault_plan_and_stats():
    from steadydancer_space.faults import FaultPlan, GpuStats

    plan = FaultPlan("oom_once, oom_seed=7")
    assert plan.take_oom(1) and not plan.take_oom(1) and plan.take_oom(7)
    assert not FaultPlan.for_mode("oom_once", tiny=False).take_oom(0)
    with pytest.raises(ValueError, match="unknown fault"):
        FaultPlan("explode")
    stats = GpuStats()
    with stats.track():
        assert stats.snapshot()["running"] == 1
    assert stats.snapshot()["peak"] == 1 and stats.succeeded == 1


def test_a_rank_fault_fails_that_ranks_second_forward_once():
    import torch

    from steadydancer_space.faults import FaultPlan, failing_forward

    plan = FaultPlan("oom_rank=1")
    assert not plan.take_rank_oom(0) and plan.take_rank_oom(1) and not plan.take_rank_oom(1)
    with pytest.raises(ValueError, match="bad number"):
        FaultPlan("oom_rank=one")
    layer = torch.nn.Linear(2, 2)
    with failing_forward(layer, 1, "injected"):
        layer(torch.zeros(1, 2))
        with pytest.raises(torch.OutOfMemoryError, match="injected"):
            layer(torch.zeros(1, 2))
    layer(torch.zeros(1, 2))  # the hook is gone


def test_config_file_ttl_and_limits_agree():
    from steadydancer_space.config import AppConfig
    from steadydancer_space.uploads import Limits

    assert AppConfig(file_ttl=600).delete_cache == (150, 600)
    with pytest.raises(ValueError, match="file_ttl"):
        AppConfig(file_ttl=5)
    config = AppConfig.from_env({"STEADYDANCER_MAX_FRAMES": "41", "STEADYDANCER_MAX_STEPS": "12",
                                 "STEADYDANCER_MAX_FILE_MB": "2"})
    assert (config.max_frames, config.limits.max_steps, config.limits.max_file_bytes) == (41, 12, 2 * 2**20)
    assert AppConfig.from_env({}).limits == Limits()


def test_load_keypoints_names_the_problem(tmp_path):
    from steadydancer.pose import PoseFormatError
    from steadydancer_space.uploads import InputError, KeypointFileError, Limits, load_keypoints

    good = json.loads((EXAMPLES / "dance_wave.json").read_text())
    good["frames"] = good["frames"][:3]
    cases = {
        "nan": ('{"format": "steadydancer.pose_sequence", "width": NaN}', "NaN"),
        "deep": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        "latin1": (b"{\"a\": \"\xe9\"}", "not UTF-8"),
        "list": ("[1, 2]", "one JSON object"),
        "inf_width": (json.dumps({**good, "width": 1e400}).replace("Infinity", "1e400"), "width"),
        "long_int": (json.dumps({**good, "height": 7}).replace("7", "9" * 5000), r"height: .* got inf"),
        "frame_width": (json.dumps({**good, "frames": [{**good["frames"][0], "width": 10**40}]}),
                        r"frames\[0\]\.width: expected the frame size in pixels \(1 to 16384\), got 1e\+40"),
        "no_frames": (json.dumps({**good, "frames": []}), "no frames"),
        "bad_shape": (json.dumps({**good, "frames": [{"body": [[0, 0]] * 17}]}), r"frames\[0\]\.body"),
        "far": (json.dumps({**good, "frames": [{"body": [[1e9, 0]] * 18}]}), "fractions of the frame"),
        "bad_subset": (json.dumps({**good, "frames": [{"body": [[0.5, 0.5]] * 18, "subset": [[]]}]}), "schema"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(KeypointFileError, match=message) as info:
            load_keypoints(path, Limits())
        assert isinstance(info.value, InputError) and isinstance(info.value, PoseFormatError), name
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(good).encode())
    assert len(load_keypoints(bom, Limits())) == 3


def test_pinned_revisions_reach_every_download(monkeypatch):
    import huggingface_hub

    import steadydancer.assembly
    import steadydancer.pose
    from steadydancer_space.config import AppConfig
    from steadydancer_space.runtime import ModelLoadError, load_runtime
    from steadydancer.loading import resolve_checkpoint_dir

    import steadydancer.presets

    class Pipeline:  # what the runtime does with a loaded pipeline on the CPU
        def to(self, device):
            return self

    seen = {}
    monkeypatch.setattr(steadydancer.assembly, "load_pipeline", lambda *a, **k: seen.setdefault("pipe", k) and Pipeline())
    monkeypatch.setattr(steadydancer.presets, "PresetSwitch", lambda *a, **k: seen.setdefault("lora", k) and object())
    monkeypatch.setattr(steadydancer.pose, "DWPoseDetector", lambda *a, **k: seen.setdefault("pose", k) and object())
    config = AppConfig(transformer_revision="t" * 40, base_revision="b" * 40, pose_revision="p" * 40,
                       fast_lora_revision="l" * 40, device="cpu")
    load_runtime(config)
    assert seen["pipe"]["transformer_revision"] == "t" * 40 and seen["pipe"]["base_revision"] == "b" * 40
    assert seen["pose"]["revision"] == "p" * 40 and seen["lora"]["revision"] == "l" * 40

    def snapshot_download(repo, revision=None, **kwargs):
        seen["snapshot"] = revision
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    with pytest.raises(OSError, match="revision abc.*HF_HUB_OFFLINE"):
        resolve_checkpoint_dir("org/repo", revision="abc")
    assert seen["snapshot"] == "abc"

    def failing(*args, **kwargs):
        raise OSError("Could not download org/repo (revision main) from the Hugging Face Hub: offline")

    monkeypatch.setattr(steadydancer.assembly, "load_pipeline", failing)
    with pytest.raises(ModelLoadError, match="--tiny"):
        load_runtime(config)


def test_people_counting():
    """Tiny mode's stand-in detector reports how many figures it saw, as DWPose reports its person boxes."""
    from steadydancer.pose import SyntheticPoseDetector
    from steadydancer_space.poses import StandInPeopleDetector, count_figures

    person = np.asarray(Image.open(EXAMPLES / "ref_red_dress.png").convert("RGB"))
    assert count_figures(person) == 1
    assert count_figures(np.concatenate([person, person], axis=1)) == 2
    assert count_figures(np.full_like(person, 200)) == 0
    detector = StandInPeopleDetector(SyntheticPoseDetector())
    two = detector.detect(np.concatenate([person, person], axis=1))
    assert two.num_people == 2 and not two.pose.is_empty
    nobody = detector.detect(np.full_like(person, 200))
    assert nobody.num_people == 0 and nobody.pose.is_empty and detector(np.full_like(person, 200)).is_empty


# ---------------------------------------------------------------------- the launched app
@pytest.fixture(scope="module")
def app(tmp_path_factory):
    yield from launch_tiny_app(tmp_path_factory, "reliability", env=APP_ENV)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Bad and good files, made once."""
    root = tmp_path_factory.mktemp("media")
    person = np.asarray(Image.open(EXAMPLES / "ref_red_dress.png").convert("RGB"))
    files = {}

    def image(name, array):
        Image.fromarray(np.asarray(array, np.uint8)).save(root / name)
        files[name] = root / name

    def video(name, frames, fps=16):
        files[name] = Path(write_mp4(root / name, np.asarray(frames, np.uint8), fps, preset="ultrafast"))

    def raw(name, data):
        (root / name).write_bytes(data)
        files[name] = root / name

    image("blank.png", np.full((576, 384, 3), 200))
    image("two_people.png", np.concatenate([person, person], axis=1))
    image("huge.png", np.full((1000, 1100, 3), 90))
    image("wide.png", np.full((100, 1000, 3), 90))
    video("drive.mp4", np.stack([np.asarray(Image.fromarray(person).resize((96, 144)))] * 12))
    video("blank.mp4", np.full((12, 144, 96, 3), 200))
    video("long.mp4", np.full((16 * 10, 48, 32, 3), 60))
    video("big_frames.mp4", np.full((3, 608, 1024, 3), 60))
    video("wide.mp4", np.full((3, 48, 400, 3), 60))
    raw("video_as.png", files["drive.mp4"].read_bytes())
    raw("image_as.mp4", (EXAMPLES / "ref_red_dress.png").read_bytes())
    raw("text.png", b"hello, I am not an image")
    raw("truncated.png", (EXAMPLES / "ref_red_dress.png").read_bytes()[:300])
    raw("truncated.mp4", files["drive.mp4"].read_bytes()[:600])
    raw("empty.png", b"")
    raw("empty.mp4", b"")
    import av

    with av.open(str(root / "zero.mp4"), "w") as container:  # a container whose video stream has no frames
        stream = container.add_stream("libx264", rate=16)
        stream.width, stream.height, stream.pix_fmt = 64, 96, "yuv420p"
        container.start_encoding()
    files["zero.mp4"] = root / "zero.mp4"
    raw("not_json.json", (EXAMPLES / "ref_red_dress.png").read_bytes())
    raw("wrong_format.json", json.dumps({"format": "openpose", "version": 1}).encode())
    raw("nan.json", b'{"format": "steadydancer.pose_sequence", "version": 1, "width": 512, "height": NaN}')
    good = json.loads((EXAMPLES / "dance_wave.json").read_text())
    raw("nobody.json", json.dumps({**good, "frames": [{"body": [[-1, -1]] * 18}] * 9}).encode())
    raw("tiny_fps.json", json.dumps({**good, "fps": 1e-9}).encode())
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (600, 700, 3), dtype=np.uint8)).save(root / "big.png")
    files["big.png"] = root / "big.png"
    files["root"] = root
    return files


def extract(client, reference, video=None, keypoints=None, frames=5, **overrides):
    args = dict(reference=handle_file(str(reference)) if reference else None,
                driving_video=handle_file(str(video)) if video else None,
                keypoints=handle_file(str(keypoints)) if keypoints else None, resolution=PAPER, num_frames=frames,
                motion=REAL_TIME, align_to_reference=True, smooth_start=False, smooth_start_frames=4,
                auto_start=False)
    args.update(overrides)
    return client.predict(*args.values(), api_name="/extract_poses")


def animate_args(reference=EXAMPLES / "ref_red_dress.png", video=None, keypoints=EXAMPLES / "dance_wave.json", *,
                 frames=5, steps=2, seed=7, **overrides):
    """/animate inputs by name, in order (see the API section of the README)."""
    args = dict(reference=handle_file(str(reference)), driving_video=handle_file(str(video)) if video else None,
                keypoints=handle_file(str(keypoints)) if keypoints else None, prompt="a person dancing",
                negative_prompt="", resolution=PAPER, num_frames=frames, motion=REAL_TIME, align_to_reference=True,
                smooth_start=False, smooth_start_frames=4, auto_start=False, guidance_scale=5.0,
                pose_guidance_scale=1.0, window_start=0.1, window_end=0.4, steps=steps, shift=5.0, seed=seed,
                randomize_seed=False, fidelity="default", preset="custom", reference_keypoints=None)
    args.update(overrides)
    return list(args.values())


def expect_error(call, pattern: str) -> str:
    with pytest.raises(AppError) as info:
        call()
    message = str(info.value)
    assert_clean(message)
    assert re.search(pattern, message), f"{pattern!r} not in {message!r}"
    return message


ANIMATE_PARAMS = [
    "reference", "driving_video", "keypoints", "prompt", "negative_prompt", "resolution", "num_frames", "motion", "align_to_reference", "smooth_start",
    "smooth_start_frames", "auto_start", "guidance_scale", "pose_guidance_scale", "window_start", "window_end",
    "steps", "shift", "seed", "randomize_seed", "fidelity", "preset", "reference_keypoints"]


@pytest.fixture(scope="module")
def uploads(app):
    """The example reference and dance, uploaded once for raw REST calls (FileData payloads)."""
    import httpx

    def upload(path):
        with open(path, "rb") as f:
            response = httpx.post(app.url + "gradio_api/upload", files={"files": (path.name, f)}, timeout=30)
        return {"path": response.json()[0], "meta": {"_type": "gradio.FileData"}}

    return upload(EXAMPLES / "ref_red_dress.png"), upload(EXAMPLES / "dance_wave.json")


def call_raw(app, uploads, timeout=120, values_sent=None, **overrides):
    """POST /gradio_api/call/animate with a JSON body that may hold NaN and Infinity (which gradio_client refuses to
    send, but any script can), of the first `values_sent` values (all by default); returns ("complete", outputs) or
    ("error", message)."""
    import httpx

    values = dict(zip(ANIMATE_PARAMS, animate_args(steps=1, seed=3)))
    values.update(reference=uploads[0], keypoints=uploads[1], driving_video=None)
    values.update(overrides)
    body = json.dumps({"data": list(values.values())[:values_sent]}, allow_nan=True)
    response = httpx.post(app.url + "gradio_api/call/animate", content=body,
                          headers={"Content-Type": "application/json"}, timeout=30)
    event_id = response.json()["event_id"]
    event = None
    with httpx.stream("GET", f"{app.url}gradio_api/call/animate/{event_id}", timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                data = json.loads(line[5:])
                return event, (data or {}).get("error") if event == "error" else data
    raise AssertionError("the event stream ended without a result")


def valid_request_succeeds(client, frames=5, seed=11):
    video, pose_video, used_seed, report, *_ = client.predict(*animate_args(frames=frames, seed=seed),
                                                          api_name="/animate")
    assert probe_mp4(video).num_frames == frames and used_seed == seed


BAD_FILES = [
    # (what, reference, video, keypoints, message)
    ("video renamed .png", "video_as.png", None, "@dance", r"reference image is actually a video \(MP4/MOV\)"),
    ("text renamed .png", "text.png", None, "@dance", "reference image is not an image file"),
    ("truncated image", "truncated.png", None, "@dance", "reference image is corrupt or truncated"),
    ("empty image", "empty.png", None, "@dance", r"reference image is empty \(0 bytes\)"),
    ("too many pixels", "huge.png", None, "@dance", r"1100x1000; at most 1\.0 megapixels"),
    ("extreme aspect image", "wide.png", None, "@dance", r"aspect ratio of 10\.0:1; at most 4:1"),
    ("no person in the photo", "blank.png", None, "@dance", "No person was found in the reference image"),
    ("image renamed .mp4", "@ref", "image_as.mp4", None, r"driving video is actually an image \(PNG\)"),
    ("truncated video", "@ref", "truncated.mp4", None, "driving video is corrupt, truncated"),
    ("empty video", "@ref", "empty.mp4", None, r"driving video is empty \(0 bytes\)"),
    ("zero-length video", "@ref", "zero.mp4", None, "no video stream .*zero-length"),
    ("too long video", "@ref", "long.mp4", None, r"lasts 10 s; at most 8 s"),
    ("too many pixels per frame", "@ref", "big_frames.mp4", None, r"1024x608; at most 0\.5 megapixels per frame"),
    ("extreme aspect video", "@ref", "wide.mp4", None, r"aspect ratio of 8\.3:1"),
    ("no person in the video", "@ref", "blank.mp4", None, "No person was found in 5 of 5 driving frames"),
    ("keypoints not JSON", "@ref", None, "not_json.json", r"keypoint file is not JSON: it is an image \(PNG\)"),
    ("keypoints of another format", "@ref", None, "wrong_format.json", "'format' must be 'steadydancer.pose_sequence'"),
    ("keypoints with NaN", "@ref", None, "nan.json", "keypoint file contains NaN"),
    ("keypoints without a person", "@ref", None, "nobody.json", "No person was found in 5 of 5 driving frames"),
    # A rate sizes the resampling loop: 1e-9 fps once made it run for ever (and hold the generation slot).
    ("keypoints at 1e-9 fps", "@ref", None, "tiny_fps.json", r"Keypoint file\.fps: expected a frame rate between 1 "),
]


@pytest.mark.parametrize("what,reference,video,keypoints,message", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_files_get_clear_messages(client, media, what, reference, video, keypoints, message):
    resolve = {"@ref": EXAMPLES / "ref_red_dress.png", "@dance": EXAMPLES / "dance_wave.json", None: None}
    ref, vid, kp = (resolve[x] if x in resolve else media[x] for x in (reference, video, keypoints))
    expect_error(lambda: extract(client, ref, vid, kp), message)
    # The same check guards /animate, before any GPU time.
    expect_error(lambda: client.predict(*animate_args(ref, vid, kp), api_name="/animate"), message)


def test_a_keypoint_file_at_a_tiny_fps_is_refused_at_once_and_the_next_request_succeeds(client, media):
    """`"fps": 1e-9` once sized a resampling loop that never ended (and held the generation slot). The bound is a
    hang detector, not a speed goal: the refusal comes before any pose work (about a tenth of a second here)."""
    refusal = client.submit(*animate_args(keypoints=media["tiny_fps.json"]), api_name="/animate")
    with pytest.raises(AppError) as info:
        refusal.result(timeout=10)
    assert_clean(str(info.value))
    assert re.search(r"Keypoint file\.fps: expected a frame rate between 1 ", str(info.value))
    valid_request_succeeds(client, frames=5, seed=3)


def _reference_keypoints(pose_frames):
    good = json.loads((EXAMPLES / "ref_red_dress.json").read_text())
    return json.dumps({**good, "frames": pose_frames(good["frames"][0])}).encode()


BAD_REFERENCE_KEYPOINTS = [
    # (what, file content, message)
    ("not JSON", (EXAMPLES / "ref_red_dress.png").read_bytes(), r"reference keypoint file is not JSON: it is an image"),
    ("empty", b"", r"reference keypoint file is empty \(0 bytes\)"),
    ("invalid JSON", b'{"format": ', r"reference keypoint file is not valid JSON \(line 1"),
    ("a driving clip's keypoints", (EXAMPLES / "dance_wave.json").read_bytes(),
     r"Reference keypoint file: expected one frame \(the reference image's pose\), got 96"),
    ("no neck", _reference_keypoints(lambda f: [{**f, "body": [[-1, -1] if i == 1 else p for i, p in
                                                             enumerate(f["body"])]}]),
     r"Reference keypoint file: the neck \(body\[1\], between the shoulders\) is missing"),
    ("pixels, not fractions", _reference_keypoints(lambda f: [{**f, "body": [[x * 384, y * 576] for x, y in f["body"]]}]),
     r"Reference keypoint file\.frames\[0\]\.body: coordinates are fractions of the frame"),
]


@pytest.mark.parametrize("what,content,message", BAD_REFERENCE_KEYPOINTS, ids=[c[0] for c in BAD_REFERENCE_KEYPOINTS])
def test_bad_reference_keypoints_get_clear_messages(client, tmp_path, what, content, message):
    """`reference_keypoints`, the last parameter of both endpoints."""
    path = tmp_path / "reference.json"
    path.write_bytes(content)
    given = handle_file(str(path))
    expect_error(lambda: extract(client, EXAMPLES / "ref_red_dress.png", keypoints=EXAMPLES / "dance_wave.json",
                                 fidelity="default", reference_keypoints=given), message)
    expect_error(lambda: client.predict(*animate_args(reference_keypoints=given), api_name="/animate"), message)


def test_over_the_upload_limit_is_refused(app, client, media):
    # gradio_client checks the size Gradio announces; the server refuses it too (a browser or a script).
    with pytest.raises(ValueError, match="exceeds the maximum file size of 1048576 bytes"):
        extract(client, media["big.png"], keypoints=EXAMPLES / "dance_wave.json")
    import httpx

    with open(media["big.png"], "rb") as f:
        response = httpx.post(app.url + "gradio_api/upload", files={"files": ("big.png", f, "image/png")})
    assert response.status_code == 413 and "maximum allowed size" in response.text


def test_several_people_are_reported_and_names_never_reach_paths(client, media, tmp_path):
    renamed = tmp_path / "my_private_name.png"
    shutil.copy(media["two_people.png"], renamed)
    outputs = extract(client, renamed, keypoints=EXAMPLES / "dance_wave.json")
    report = outputs[2]
    assert "shows 2 people; only the most prominent one is animated" in report
    assert not any("my_private_name" in Path(p).name for p in outputs if isinstance(p, str) and os.sep in p)
    # a driving video with two dancers
    pair = tmp_path / "pair.mp4"
    person = np.asarray(Image.open(EXAMPLES / "ref_red_dress.png").convert("RGB").resize((96, 144)))
    write_mp4(pair, np.stack([np.concatenate([person, person], axis=1)] * 12), 16, preset="ultrafast")
    report = extract(client, EXAMPLES / "ref_red_dress.png", pair)[2]
    assert "5 of 5 driving frames show several people (1-5)" in report


NUMBERS = [
    ("steps", 500, r"steps must be between 1 and 20, got 500"),
    ("steps", 2.5, r"steps must be a whole number, got 2\.5"),
    ("steps", "lots", r"steps must be a number, got 'lots'"),
    ("num_frames", 8, r"num_frames must be 4n\+1"),
    ("num_frames", 1001, r"num_frames must be between 5 and 33, got 1001"),
    ("guidance_scale", -3, r"guidance_scale must be between 1 and 10"),
    ("pose_guidance_scale", 1e9, r"pose_guidance_scale must be between 0 and 5"),
    ("window_start", 1.5, r"window_start must be between 0 and 1"),
    ("window_end", -0.1, r"window_end must be between 0 and 1"),
    ("window_start", 0.9, r"pose_guidance_window: window_start \(0\.9\) must not be after window_end \(0\.4\)"),
    ("shift", 0, r"shift must be between 1 and 10, got 0"),
    ("seed", -1, r"seed must be between 0 and 2147483647, got -1"),
    ("seed", None, r"seed must be a number, got None"),
    ("smooth_start_frames", 0, r"smooth_start_frames must be between 1 and 32"),
    ("randomize_seed", "yes", r"randomize_seed must be true or false"),
    ("resolution", "8K", r"resolution must be one of '480p', '576p', '720p', got '8K'"),
    ("prompt", "x" * (MAX_PROMPT + 1), rf"prompt has {MAX_PROMPT + 1} characters; at most {MAX_PROMPT}"),
    ("negative_prompt", "y" * (MAX_PROMPT + 5), rf"negative prompt has {MAX_PROMPT + 5} characters"),
]


@pytest.mark.parametrize("field,value,message", NUMBERS, ids=[f"{f}={str(v)[:12]}" for f, v, _ in NUMBERS])
def test_out_of_range_api_values_are_refused(client, field, value, message):
    expect_error(lambda: client.predict(*animate_args(**{field: value}), api_name="/animate"), message)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_from_scripts_are_refused(app, uploads, value):
    event, message = call_raw(app, uploads, guidance_scale=value)
    assert event == "error" and re.search(rf"guidance_scale must be between 1 and 10, got {value}", message)


@pytest.mark.parametrize("release,last", [("first", "randomize_seed"), ("presets", "preset")])
def test_raw_calls_written_for_an_earlier_parameter_list_still_work(app, uploads, release, last):
    """Parameters are appended; gradio_client fills in the new ones, and the app does so for raw HTTP calls too
    (Gradio alone refuses a short list before any handler runs, with no message)."""
    event, outputs = call_raw(app, uploads, values_sent=ANIMATE_PARAMS.index(last) + 1)
    assert event == "complete", outputs
    assert probe_mp4(outputs[0]["path"]).num_frames == 5


def test_a_valid_request_after_the_bad_ones(client):
    valid_request_succeeds(client, frames=9, seed=5)


# ---------------------------------------------------------------------- property-based fuzzing
RANGES = {  # the server's ranges under APP_ENV (min, max, integer)
    "num_frames": (5, MAX_FRAMES, True), "steps": (1, MAX_STEPS, True), "guidance_scale": (1, 10, False),
    "pose_guidance_scale": (0, 5, False), "window_start": (0, 1, False), "window_end": (0, 1, False),
    "shift": (1, 10, False), "seed": (0, 2**31 - 1, True), "smooth_start_frames": (1, 32, True),
}
EDGES = [0, -1, 1, 0.5, 4, 5, 9, 33, 37, 2**31, 2**63, -2**63, 1e308, -1e-308, float("nan"), float("inf"),
         float("-inf"), "", " ", "1e3", "0x10", "nan", "--1", [], {}, [1], True, False, None]
VALUES = st.one_of(st.sampled_from(EDGES), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
                   st.text(max_size=6), st.integers(0, 40), st.floats(0, 12))  # the last two: often in range


def expected_valid(field, value) -> bool:
    low, high, integer = RANGES[field]
    if value is None or isinstance(value, (bool, list, dict)) or (isinstance(value, str) and not value.strip()):
        return False
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return False
    if not np.isfinite(number) or not low <= number <= high or (integer and number != int(number)):
        return False
    if field == "num_frames" and (int(number) - 1) % 4:
        return False
    if field == "seed" and int(number) == OOM_SEED:
        return False
    return not (field == "window_start" and number > 0.4) and not (field == "window_end" and number < 0.1)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(field=st.sampled_from(sorted(RANGES)), value=VALUES)
def test_fuzz_numeric_api_inputs(app, uploads, field, value):
    """Any JSON value for any numeric parameter (NaN and infinities included, sent as a script would): a valid one
    gives its video, an invalid one an error naming the parameter; never an internal error or a hang."""
    event, result = call_raw(app, uploads, timeout=60, **{field: value})
    if expected_valid(field, value):
        assert event == "complete", result
        frames = int(float(value)) if field == "num_frames" else 5
        assert probe_mp4(result[0]["path"]).num_frames == frames
        assert result[2] == (int(float(value)) if field == "seed" else 3)
    else:
        assert event == "error" and result, (field, value, result)
        assert_clean(result)
        name = "pose_guidance_window|window_start" if field == "window_start" else field
        name = "pose_guidance_window|window_end" if field == "window_end" else name
        assert re.search(rf"\b({name})\b", result), (field, value, result)


def _mutations():
    """A valid 6-frame keypoint document with one random change: a value replaced, a key dropped, or junk."""
    leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text(max_size=4),
                     st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([-1, 0.5, 1e12, -1e12, 0]))
    junk = st.recursive(leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=5), inner, max_size=4)),
                        max_leaves=12)
    keys = st.sampled_from(["format", "version", "width", "height", "fps", "frames", "body", "hands", "face",
                            "subset", "body_scores", "hand_scores", "face_scores", "candidate", "faces"])
    return st.tuples(st.sampled_from(["replace", "drop", "replace_frame_part", "whole", "scale"]), keys, junk,
                     st.integers(0, 5))


def _mutate(doc, action, key, value, index):
    if action == "whole":
        return value
    if action == "scale":  # a geometrically degenerate but schema-valid dance: every point in one place
        doc["frames"][index]["body"] = [[0.5, 0.5]] * 18
        return doc
    target = doc if key in ("format", "version", "width", "height", "fps", "frames") else doc["frames"][index]
    if action == "drop":
        target.pop(key, None)
    else:
        target[key] = value
    return doc


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(mutation=_mutations())
def test_fuzz_keypoint_json(client, media, mutation):
    doc = json.loads((EXAMPLES / "dance_wave.json").read_text())
    doc["frames"] = doc["frames"][:6]
    doc = _mutate(doc, *mutation)
    path = media["root"] / f"fuzz_{threading.get_ident()}.json"
    path.write_text(json.dumps(doc))
    try:
        outputs = extract(client, EXAMPLES / "ref_red_dress.png", keypoints=path)
    except AppError as error:
        message = str(error)
        assert_clean(message)
        assert re.search(r"keypoint|person|pose|frame", message, re.I), message
    else:
        assert probe_mp4(outputs[0]).num_frames == 5


def test_valid_requests_after_fuzzing(client):
    valid_request_succeeds(client, frames=5, seed=21)
    outputs = extract(client, EXAMPLES / "ref_red_dress.png", keypoints=EXAMPLES / "dance_wave.json")
    assert probe_mp4(outputs[0]).num_frames == 5


# ---------------------------------------------------------------------- failures and load
def _stats(client) -> dict:
    return client.predict(api_name="/tiny_stats")


def _workspaces(app) -> list[Path]:
    """Request folders left under the app's output folder (its hidden bookkeeping, e.g. `.cancels`, is no request's)."""
    return [d for root in (app.tmp / "tmp").glob("steadydancer-outputs-*") for d in root.iterdir()
            if not d.name.startswith(".")]


def test_out_of_memory_inside_generation_leaves_the_app_usable(app, client):
    before = _stats(client)
    start = time.perf_counter()
    message = expect_error(lambda: client.predict(*animate_args(seed=OOM_SEED, steps=4), api_name="/animate"),
                           r"Out of memory: .*fewer frames or a lower resolution .*--memory-plan offload")
    assert time.perf_counter() - start < 60
    after = _stats(client)
    assert after["out_of_memory"] == before["out_of_memory"] + 1 and after["running"] == 0
    assert "memory has been released" in message
    # The request's working files are gone, and the log shows the OOM without a traceback.
    assert after["workspaces"] == 0 and _workspaces(app) == []
    assert "steadydancer: out of memory: CUDA out of memory after denoising step 1 of 4" in app.log()
    # The next request runs to the end.
    valid_request_succeeds(client, frames=9, seed=31)
    assert _stats(client)["succeeded"] == after["succeeded"] + 1 and _workspaces(app) == []


def test_concurrent_jobs_are_bounded_and_do_not_mix(app, client):
    """Four jobs at once against a queue of 2 and one GPU slot: some are refused with a clear message, at most one
    generation runs at a time, and every accepted job gets its own frame count and seed back."""
    from gradio_client.utils import QueueError

    before = _stats(client)
    requests = [(101, 5), (102, 9), (103, 13), (104, 17)]
    jobs = [client.submit(*animate_args(frames=f, seed=s, steps=3), api_name="/animate") for s, f in requests]
    done, refused = {}, []
    for (seed, frames), job in zip(requests, jobs):
        try:
            video, pose_video, used_seed, report, *_ = job.result(timeout=120)
        except QueueError as error:
            assert "Queue is full" in str(error)
            refused.append(seed)
            continue
        done[seed] = (probe_mp4(video).num_frames, probe_mp4(pose_video).num_frames, used_seed, report)
    assert refused, "the queue (size 2) accepted four simultaneous jobs"
    assert len(done) >= 2
    for seed, frames in requests:
        if seed in done:
            assert done[seed][:3] == (frames, frames, seed)
            assert f"{frames} frames at" in done[seed][3] and f"seed {seed}" in done[seed][3]
    after = _stats(client)
    assert after["peak"] == 1 and after["running"] == 0
    assert after["succeeded"] - before["succeeded"] == len(done)
    intervals = sorted(after["intervals"])[-len(done):]
    assert all(a[1] <= b[0] for a, b in zip(intervals, intervals[1:])), "generations overlapped"
    assert _workspaces(app) == []


def test_no_arbitrary_files_are_served(app):
    for path in ("/etc/passwd", str(REPO / "app.py"), str(REPO / "README.md")):
        try:
            with urllib.request.urlopen(f"{app.url}gradio_api/file={path}", timeout=10) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
        assert status in (403, 404), (path, status)


def test_the_server_log_holds_no_traceback(app):
    """Every request above failed (or not) in a way the app foresaw: nothing reached Gradio's error printer."""
    log = app.log()
    assert "Traceback" not in log, log[log.index("Traceback") - 500: log.index("Traceback") + 3000]


def test_paths_not_uploaded_are_refused_and_the_app_keeps_serving(app, uploads, client):
    """A script naming a server file as its upload gets a bare error (Gradio refuses the path before any handler
    runs; no file content or path in the answer), and the next request works."""
    for path in ("/etc/passwd", str(REPO / "app.py")):
        event, message = call_raw(app, uploads, reference={"path": path, "meta": {"_type": "gradio.FileData"}})
        assert event == "error" and not message
    valid_request_succeeds(client, frames=5, seed=41)
