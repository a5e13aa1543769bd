"""App-side logic without a server: configuration, GPU-time estimates, mp4 writing with audio, the pose step's
warnings and cache, the example files."""

import json
from pathlib import Path

import numpy as np
import pytest

from steadydancer.scheduling import pose_guidance_steps, transformer_passes
from steadydancer_space import estimate as duration
from steadydancer_space.config import AppConfig, parse_config
from steadydancer_space.examples import EXAMPLES
from steadydancer.video_io import AudioClip, delayed, probe_mp4, read_audio, write_mp4

from helpers.paths import REPO


# ---------------------------------------------------------------------- config
def test_config_env_then_flags():
    env = {"STEADYDANCER_TINY": "1", "STEADYDANCER_TRANSFORMER": "/weights/dit", "STEADYDANCER_DTYPE": "float16",
           "STEADYDANCER_MAX_FRAMES": "161", "HF_HUB_OFFLINE": "1", "STEADYDANCER_MEMORY_PLAN": "fp8"}
    config = AppConfig.from_env(env)
    assert config.tiny and config.offline and config.memory_plan == "fp8"
    assert (config.transformer, config.dtype, config.max_frames) == ("/weights/dit", "float16", 161)
    flagged = parse_config(["--no-tiny", "--base", "me/base", "--base-revision", "abc123", "--concurrency", "2"], env)
    assert not flagged.tiny and flagged.base == "me/base" and flagged.base_revision == "abc123"
    assert flagged.concurrency == 2 and flagged.transformer == "/weights/dit"  # env kept where no flag
    assert AppConfig.from_env({}) == AppConfig()


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="4n\\+1"):
        AppConfig(max_frames=80)
    with pytest.raises(ValueError, match="STEADYDANCER_DTYPE='int8' must be one of"):
        AppConfig.from_env({"STEADYDANCER_DTYPE": "int8"})
    with pytest.raises(ValueError, match="STEADYDANCER_GPU='tpu' must be one of"):
        AppConfig.from_env({"STEADYDANCER_GPU": "tpu"})


def test_mode_key_separates_example_caches():
    assert AppConfig(tiny=True).mode_key != AppConfig().mode_key
    assert AppConfig(transformer_revision="v2").mode_key != AppConfig().mode_key


# ---------------------------------------------------------------------- GPU time
def test_passes_follow_the_released_window():
    # 40 steps, window (0.1, 0.4) strict: steps 5..15 add the negative-pose pass.
    assert sum(pose_guidance_steps(40, (0.1, 0.4))) == 11
    assert transformer_passes(40, 5.0, 1.0, (0.1, 0.4)) == 91
    assert transformer_passes(40, 1.0, 0.0, (0.1, 0.4)) == 40


def test_estimate_grows_with_the_request():
    base = duration.estimate_gpu_seconds(81, 576, 1024, gpu="h100")
    assert duration.estimate_gpu_seconds(49, 576, 1024, gpu="h100").seconds < base.seconds
    assert duration.estimate_gpu_seconds(81, 720, 1280, gpu="h100").seconds > base.seconds
    assert duration.estimate_gpu_seconds(81, 576, 1024, 20, gpu="h100").seconds < base.seconds
    assert duration.estimate_gpu_seconds(81, 576, 1024, gpu="zerogpu-large").seconds > base.seconds
    assert base.seconds % 10 == 0 and base.tokens == 23 * 36 * 64
    with pytest.raises(ValueError, match="Unknown GPU"):
        duration.estimate_gpu_seconds(81, 576, 1024, gpu="tpu")


# ---------------------------------------------------------------------- video
def _tone(seconds, freq=440.0, rate=44100):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)[None]


def test_write_mp4_plays_everywhere(tmp_path):
    frames = np.random.default_rng(0).random((9, 45, 63, 3), dtype=np.float32)  # odd sizes, float frames
    path = write_mp4(tmp_path / "v.mp4", frames, 16)
    probe = probe_mp4(path)
    assert (probe.num_frames, probe.width, probe.height, probe.fps) == (9, 64, 46, 16.0)
    assert (probe.codec, probe.pix_fmt, probe.audio_codec) == ("h264", "yuv420p", None)


def test_audio_is_cut_to_the_video_and_delayed(tmp_path):
    # Source: 1 s of silence, then a tone; the output takes 0.5 s of lead-in silence then the source from 1.0 s.
    samples = np.concatenate([np.zeros((1, 44100), np.float32), _tone(2.0)], axis=1)
    source = write_mp4(tmp_path / "src.mp4", np.zeros((48, 32, 32, 3), np.uint8), 16, audio=AudioClip(samples))
    clip = read_audio(source, start=1.0, duration=1.0)
    assert clip is not None and abs(clip.duration - 1.0) < 1e-3
    assert np.abs(clip.samples[:, 2000:]).mean() > 0.2  # the tone, not the silence before it
    out = write_mp4(tmp_path / "out.mp4", np.zeros((25, 32, 32, 3), np.uint8), 16, audio=delayed(clip, 0.5))
    probe = probe_mp4(out)
    assert probe.audio_codec == "aac" and abs(probe.audio_duration - 1.5) < 0.05  # lead-in + clip
    back = read_audio(out)
    quiet, loud = np.abs(back.samples[:, 2000:20000]).mean(), np.abs(back.samples[:, 26000:60000]).mean()
    assert quiet < 0.02 < 0.2 < loud
    assert read_audio(write_mp4(tmp_path / "mute.mp4", np.zeros((5, 32, 32, 3), np.uint8))) is None


# ---------------------------------------------------------------------- pose step
def test_frame_ranges_and_warnings():
    from types import SimpleNamespace

    from steadydancer_space.poses import frame_ranges, pose_warnings

    assert frame_ranges([2, 3, 4, 8]) == "3-5, 9"
    from steadydancer.pose import PoseSequence, SyntheticPoseDetector

    pose = SyntheticPoseDetector()(np.zeros((64, 48, 3), np.uint8))
    far = pose.with_size(48, 64)
    far.body[far.body_present] += 3.0  # three frame widths to the right: keypoints given in the wrong unit
    driving = PoseSequence([pose, far, far, pose], 48, 64, 16)
    prepared = SimpleNamespace(lost=np.array([0, 1, 1, 0, 1], bool), padded=np.array([0, 0, 0, 1, 1], bool),
                               num_frames=5, driving_poses=driving, height=512, width=384, reference_pose=pose)
    notes = pose_warnings(prepared, synthetic=True, driving_people=np.array([1, 2, 2, 1]), reference_size=(64, 48))
    assert "FAKE" in notes[0] and "2 of 4 driving frames show several people (2-3)" in notes[1]
    assert "lost in 3 of 5 frames (2-3, 5)" in notes[2] and "4-5 repeat" in notes[3]
    assert "2 of 4 driving poses lie mostly outside their frame (2-3)" in notes[4]
    assert "only 48x64: it is enlarged 8x to 384x512" in notes[5]
    assert len(pose_warnings(prepared, synthetic=False, reference_size=(512, 384))) == 3  # lost, padded, outside
    prepared.reference_pose = far  # given keypoints off the photo
    assert "reference keypoint file's pose lies mostly outside the photo" in pose_warnings(prepared, False)[0]


def test_pose_step_cache_and_errors(tmp_path):
    from steadydancer.pose import PoseError, SyntheticPoseDetector
    from steadydancer_space.poses import PoseStepCache, run_pose_step
    from steadydancer_space.request import AnimationRequest, PoseOptions
    from steadydancer_space.uploads import InputError

    detector, cache = SyntheticPoseDetector(animate=True), PoseStepCache()
    options = PoseOptions(num_frames=9, smooth_start_frames=2)
    ref, dance = str(REPO / "examples/ref_red_dress.png"), str(REPO / "examples/dance_wave.json")
    job = AnimationRequest(ref, keypoints=dance, pose=options)
    step = run_pose_step(detector, job, 128 * 96, cache=cache)
    assert step.prepared.positive.shape == (9, 128, 80, 3) and step.driving_video is None
    assert step.lead_in_seconds == 2 / 16
    assert run_pose_step(detector, job, 128 * 96, cache=cache) is step
    assert run_pose_step(detector, job, 64 * 48, cache=cache) is not step  # the budget is part of the key
    with pytest.raises(InputError, match="reference image"):
        run_pose_step(detector, AnimationRequest(None, keypoints=dance, pose=options), 128 * 96)
    with pytest.raises(InputError, match="driving video"):
        run_pose_step(detector, AnimationRequest(ref, pose=options), 128 * 96)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(PoseError, match="format"):
        run_pose_step(detector, AnimationRequest(ref, keypoints=str(bad), pose=options), 128 * 96)


def test_request_validates_each_api_value_once_and_names_it():
    from steadydancer_space.request import MOTION_LABELS, RESOLUTION_LABELS, PoseOptions, SamplerOptions, number_fields
    from steadydancer_space.uploads import InputError, Limits

    fields = number_fields(121, Limits())
    # Stable API values and the UI's labels give the same options.
    assert PoseOptions.parse(fields, resolution="480p", motion="every_frame") == PoseOptions.parse(
        fields, resolution=RESOLUTION_LABELS["480p"], motion=MOTION_LABELS["every_frame"])
    options = PoseOptions.parse(fields, resolution="720p", num_frames=49.0, smooth_start=True, smooth_start_frames=4)
    assert (options.area, options.num_frames, options.smooth_start_frames) == (1280 * 720, 49, 4)
    assert isinstance(options.num_frames, int)
    for kwargs, message in [({"resolution": "8K"}, "resolution must be one of '480p', '576p', '720p'"),
                            ({"num_frames": 8}, r"num_frames must be 4n\+1"),
                            ({"motion": "fast"}, "motion must be one of 'real_time', 'every_frame'"),
                            ({"auto_start": "yes"}, "auto_start must be true or false")]:
        with pytest.raises(InputError, match=message):
            PoseOptions.parse(fields, **kwargs)
    sampler = SamplerOptions.parse(fields, Limits(), prompt="  ", negative_prompt="", steps=4, seed=3)
    assert sampler.prompt == SamplerOptions().prompt and sampler.negative_prompt is None
    assert (sampler.num_inference_steps, sampler.seed) == (4, 3)
    assert SamplerOptions.parse(fields, Limits(), seed=None, randomize_seed=True, random_seed=lambda: 99).seed == 99
    with pytest.raises(InputError, match="pose_guidance_window"):
        SamplerOptions.parse(fields, Limits(), window_start=0.5, window_end=0.2)


def test_values_given_with_a_preset_run_as_given_or_are_refused_naming_the_conflict():
    """gradio_client fills every parameter not given with the page's default (the fast preset, its 4 steps at text
    guidance 1, a random seed): values that contradict those choices were given on purpose and are never dropped."""
    from steadydancer.defaults import PRESETS
    from steadydancer_space.request import SamplerOptions, number_fields
    from steadydancer_space.uploads import InputError, Limits

    fields, page = number_fields(121, Limits()), SamplerOptions()
    draw = {"random_seed": lambda: 99}
    with pytest.raises(InputError, match="preset"):
        SamplerOptions.parse(fields, Limits(), steps=40, guidance_scale=5, preset=page.preset, **draw)
    custom = SamplerOptions.parse(fields, Limits(), steps=40, guidance_scale=5, preset="custom", **draw)
    assert (custom.num_inference_steps, custom.guidance_scale) == (40, 5)
    # A preset with the page's defaults for the sliders runs the preset's own values.
    quality = SamplerOptions.parse(fields, Limits(), steps=page.num_inference_steps,
                                   guidance_scale=page.guidance_scale, preset="quality", **draw)
    assert quality.num_inference_steps == PRESETS["quality"].settings.num_inference_steps
    with pytest.raises(InputError, match="randomize_seed"):
        SamplerOptions.parse(fields, Limits(), seed=7, randomize_seed=True, **draw)
    assert SamplerOptions.parse(fields, Limits(), seed=7, randomize_seed=False, **draw).seed == 7
    assert SamplerOptions.parse(fields, Limits(), seed=page.seed, randomize_seed=True, **draw).seed == 99


# ---------------------------------------------------------------------- examples
def test_committed_examples_are_small_and_valid():
    from steadydancer_space.examples import EXAMPLES
    from steadydancer.pose import PoseSequence, probe_video

    for example in EXAMPLES:
        for name in (example.reference, example.video, example.keypoints):
            if name:
                path = REPO / "examples" / name
                assert path.is_file(), f"{path} missing: run python examples/make_examples.py"
                assert path.stat().st_size < 200 * 1024
        if example.keypoints:
            sequence = PoseSequence.load(REPO / "examples" / example.keypoints)
            assert len(sequence) >= 81 and sequence.fps == 16
        if example.video:
            info = probe_video(REPO / "examples" / example.video)
            assert info.has_audio and info.fps == 16
        assert (example.num_frames - 1) % 4 == 0


def _decoded(path):
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(np.float32)


def test_committed_examples_match_the_script(tmp_path):
    """The committed files are what examples/make_examples.py makes (content, not bytes: encoders and zlib differ
    between library versions)."""
    from PIL import Image

    import importlib.util

    spec = importlib.util.spec_from_file_location("make_examples", REPO / "examples" / "make_examples.py")
    make_examples = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_examples)

    for path in map(Path, make_examples.make_examples(tmp_path)):
        committed = REPO / "examples" / path.name
        if path.suffix == ".json":
            assert json.loads(committed.read_text()) == json.loads(path.read_text()), path.name
        elif path.suffix == ".png":
            assert np.array_equal(np.asarray(Image.open(committed)), np.asarray(Image.open(path))), path.name
        else:
            ours, theirs = _decoded(path), _decoded(committed)
            assert ours.shape == theirs.shape and np.abs(ours - theirs).mean() < 2.0, path.name


def _cancelled_elsewhere(directory, job_id):
    from steadydancer_space.cancellation import CancelRegistry

    return CancelRegistry(directory).cancelled(job_id)


def test_cancels_cross_processes_and_catch_a_cancel_that_beats_its_job(tmp_path):
    import multiprocessing

    from steadydancer_space.cancellation import CancelRegistry

    registry = CancelRegistry(str(tmp_path / "cancels"))
    assert registry.start("s1-a", "s1", "e1") is False
    registry.start("s1-b", "s1", "e2")  # a second job of the same session (one Client, two jobs)
    # A ZeroGPU worker is another process: it sees the cancel through the marker file.
    with multiprocessing.get_context("spawn").Pool(1) as worker:
        assert worker.apply(_cancelled_elsewhere, (registry.directory, "s1-a")) is False
        registry.cancel_event("s1", "e1")
        assert worker.apply(_cancelled_elsewhere, (registry.directory, "s1-a")) is True
    assert not registry.cancelled("s1-b")  # the cancel named e1 only
    registry.cancel_event("s9", "e2")  # another session naming the event changes nothing
    assert not registry.cancelled("s1-b")
    registry.finish("s1-a")
    assert not registry.cancelled("s1-a")
    # A cancel naming a queued event: that job starts cancelled, the session's others do not.
    registry.cancel_event("s1", "e3")
    assert registry.start("s1-c", "s1", "e4") is False and registry.start("s1-d", "s1", "e3") is True
    assert registry.cancelled("s1-d") and not registry.cancelled("s1-c")
    # A cancel naming no event cancels the session's next job, if that starts soon; other sessions not.
    registry.cancel_next("s2")
    registry.start("s3-c", "s3")
    registry.start("s2-b", "s2")
    assert registry.cancelled("s2-b") and not registry.cancelled("s3-c")
    registry.finish("s2-b")
    registry.start("s2-d", "s2")  # the early cancel was used up
    assert not registry.cancelled("s2-d")
    # Sessions and events come from requests: a flood of cancels is bounded, and expired ones are forgotten.
    flood = CancelRegistry(str(tmp_path / "flood"))
    flood.MAX_PENDING_CANCELS = 50
    for k in range(200):
        flood.cancel_next(f"x{k}")
        flood.cancel_event(f"x{k}", f"e{k}")
    assert len(flood._early) == 50 and len(flood._queued) == 50
    flood.early_window = 0.0
    flood.cancel_next("y")
    assert len(flood._early) <= 1
    late = CancelRegistry(str(tmp_path / "late"), early_window=0.0)
    late.cancel_next("s4")
    late.start("s4-e", "s4")
    assert not late.cancelled("s4-e")


def test_cancel_listener_answers_the_cancels_it_takes_and_passes_the_others_on():
    import asyncio

    from steadydancer_space.middleware import CancelListener

    body = json.dumps({"fn_index": 2, "session_hash": "abc123", "event_id": None}).encode()
    received, seen, sent = [], [], []

    async def app(scope, receive, send):
        message = await receive()
        received.append(message["body"])

    async def send(message):
        sent.append(message)

    def on_cancel(session, fn_index, event_id):
        seen.append((session, fn_index, event_id))
        return fn_index == 2

    async def run(path, chunks):
        messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

        async def receive():
            return messages.pop(0)

        await CancelListener(app, on_cancel)({"type": "http", "method": "POST", "path": path}, receive, send)

    named = json.dumps({"fn_index": 2, "session_hash": "def456", "event_id": "e1"}).encode()
    other = json.dumps({"fn_index": 5, "session_hash": "def456", "event_id": "e2"}).encode()
    asyncio.run(run("/gradio_api/cancel", [body[:10], body[10:]]))
    asyncio.run(run("/gradio_api/queue/join", [body]))
    asyncio.run(run("/gradio_api/cancel", [named]))
    asyncio.run(run("/gradio_api/cancel", [other]))
    asyncio.run(run("/gradio_api/cancel", [json.dumps({"session_hash": "z" * 10_000, "event_id": None}).encode()]))
    # Not the 10,000-character "session"; the cancels taken are answered here, the others reach Gradio.
    assert seen == [("abc123", 2, None), ("def456", 2, "e1"), ("def456", 5, "e2")]
    assert received == [body, other, json.dumps({"session_hash": "z" * 10_000, "event_id": None}).encode()]
    answers = [json.loads(m["body"]) for m in sent if m["type"] == "http.response.body"]
    assert answers == [{"success": True}] * 2


def test_alignment_overlay_is_large_enough_to_see_and_keeps_both_images():
    import numpy as np

    from steadydancer_space.poses import OVERLAY_MIN_SIDE, overlay

    reference = np.zeros((256, 160, 3), np.uint8)
    reference[:, 80:] = 200  # right half light
    pose = np.zeros((128, 80, 3), np.uint8)
    pose[10:20, 10:20] = (255, 0, 0)  # one stroke, top left
    out = overlay(reference, pose, alpha=1.0)
    scale = OVERLAY_MIN_SIDE / 128
    assert out.shape == (OVERLAY_MIN_SIDE, round(80 * scale), 3)
    stroke = out[int(10 * scale) + 1:int(20 * scale) - 1, int(10 * scale) + 1:int(20 * scale) - 1]
    assert (stroke == (255, 0, 0)).all()  # the pose drawn where it is, enlarged
    assert out[-5:, -5:].min() == 200 and out[-5:, :5].max() == 0  # the reference elsewhere
    small = overlay(np.zeros((2000, 1250, 3), np.uint8), np.zeros((1280, 800, 3), np.uint8))
    assert small.shape[:2] == (1280, 800)  # a large pose frame is not enlarged


def test_audio_placed_hours_after_the_video_costs_nothing(tmp_path):
    """A corrupt (or hostile) timestamp that puts the audio 10 hours after the first video frame once padded 10 hours
    of silence in memory (6 GB); now only the clip's span is decoded and allocated. A quarter-second lead is kept."""
    import fractions
    import tracemalloc

    import av
    import numpy as np

    from steadydancer.video_io import AUDIO_RATE, read_audio

    def video_with_audio_at(path, seconds):
        with av.open(str(path), "w") as container:
            video = container.add_stream("libx264", rate=16)
            video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
            audio = container.add_stream("aac", rate=AUDIO_RATE)
            audio.layout = "mono"
            for _ in range(8):
                container.mux(video.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), "rgb24")))
            container.mux(video.encode())
            for k in range(60):  # 1.4 s
                frame = av.AudioFrame.from_ndarray(np.full((1, 1024), 0.1, np.float32), format="fltp", layout="mono")
                frame.rate, frame.time_base = AUDIO_RATE, fractions.Fraction(1, AUDIO_RATE)
                frame.pts = int(seconds * AUDIO_RATE) + k * 1024
                container.mux(audio.encode(frame))
            container.mux(audio.encode())
        return path

    lead = read_audio(video_with_audio_at(tmp_path / "lead.mp4", 0.25), duration=1.0)
    assert lead.samples.shape[1] == AUDIO_RATE  # one second: a quarter of silence, then the track
    assert np.abs(lead.samples[:, :AUDIO_RATE // 5]).max() == 0 and np.abs(lead.samples[:, AUDIO_RATE // 2:]).max() > 0
    late = video_with_audio_at(tmp_path / "late.mp4", 36_000.0)
    tracemalloc.start()
    try:
        clips = read_audio(late, duration=1.0), read_audio(late)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert clips == (None, None)  # no audio within the clip, nor within the 10-minute bound
    assert peak < 64 * 2**20


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.label)
def test_no_example_needs_the_detector_on_its_drawing(example):
    """Each example gives its character's keypoints: the detector only ever sees driving video frames, one call each,
    and the reference pose is the skeleton the character is drawn from (`examples/make_examples.py`)."""
    from steadydancer.pose import SyntheticPoseDetector, load_reference_pose
    from steadydancer_space.poses import run_pose_step
    from steadydancer_space.request import AnimationRequest, PoseOptions

    calls = []
    synthetic = SyntheticPoseDetector(animate=True)

    def detector(image):
        calls.append(image.shape)
        return synthetic(image)

    files = [str(REPO / "examples" / name) if name else None
             for name in (example.reference, example.video, example.keypoints, example.reference_keypoints)]
    job = AnimationRequest(*files[:3], pose=PoseOptions(num_frames=9), reference_keypoints=files[3])
    step = run_pose_step(detector, job, 128 * 96)
    assert step.reference_from_keypoints and len(calls) == (len(step.prepared.driving_poses) if example.video else 0)
    given = load_reference_pose(files[3])
    np.testing.assert_allclose(step.prepared.reference_pose.body, given.body)


def test_missing_argument_defaults_complete_short_calls_only():
    import asyncio

    from steadydancer_space.middleware import MissingArgumentDefaults

    defaults = {"animate": [None, "p", 3, "fast"], 7: [None, "p", 3, "fast"]}
    received = []

    async def app(scope, receive, send):
        message = await receive()
        received.append((dict(scope["headers"]).get(b"content-length"), json.loads(message["body"])["data"]))

    def post(path, body):
        raw = json.dumps(body).encode()
        messages = [{"type": "http.request", "body": raw, "more_body": False}]

        async def receive():
            return messages.pop(0)

        scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"content-length", str(len(raw)).encode())]}
        asyncio.run(MissingArgumentDefaults(app, defaults.get)(scope, receive, None))

    post("/gradio_api/call/animate", {"data": ["img", "q"]})  # an older script: two values short
    post("/gradio_api/queue/join", {"data": ["img"], "fn_index": 7, "session_hash": "s"})
    post("/gradio_api/call/animate", {"data": ["img", "q", 9, "quality"]})  # complete: untouched
    post("/gradio_api/call/other", {"data": ["img"]})  # not one of ours
    post("/gradio_api/upload", {"data": ["img"]})
    assert [data for _, data in received] == [["img", "q", 3, "fast"], ["img", "p", 3, "fast"],
                                             ["img", "q", 9, "quality"], ["img"], ["img"]]
    short = json.dumps({"data": ["img", "q", 3, "fast"]}).encode()
    assert received[0][0] == str(len(short)).encode()  # the header says the new length


def test_a_cancel_naming_no_event_stops_the_sessions_job_that_just_started_only(tmp_path):
    """The server may take a job before its client learns the event id: that cancel then names no event, and means
    the job that has just started, not an older one of the session."""
    from steadydancer_space.cancellation import CancelRegistry

    registry = CancelRegistry(str(tmp_path / "cancels"))
    registry.start("s-new", "s", "e-new")
    registry.cancel_next("s")
    assert registry.cancelled("s-new")

    older = CancelRegistry(str(tmp_path / "cancels-older"))
    older.JUST_STARTED = -1.0  # every running job counts as started long ago
    older.start("s-old", "s", "e-old")
    older.cancel_next("s")
    assert not older.cancelled("s-old")  # the running job is left alone...
    assert older.start("s-next", "s", "e-next") and older.cancelled("s-next")  # ...the next one starts cancelled
