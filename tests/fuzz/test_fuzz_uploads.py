"""Fuzzing the uploads of a launched `python app.py --tiny` (the limits of test_reliability) through `/extract_poses`:
reference images with a real header and a random or truncated body, driving videos cut or overwritten at random
points, and keypoint JSON of random structure and values. Every case must end within `CASE_SECONDS` with a result or
a message naming the problem (no traceback, path or "Something went wrong"), each family is followed by a request
that succeeds, and the server log holds no traceback at the end. Hypothesis runs derandomized (reproducible in CI)."""

import concurrent.futures
import io
import json
import re
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
from steadydancer.video_io import probe_mp4, write_mp4  # noqa: E402
from helpers.limited_app import APP_ENV, PAPER, REAL_TIME, assert_clean  # noqa: E402
from helpers.paths import EXAMPLES  # noqa: E402

CASE_SECONDS = 20  # the hang limit of one case (a valid one takes about a second)
FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
REFERENCE, DANCE = EXAMPLES / "ref_red_dress.png", EXAMPLES / "dance_wave.json"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    yield from launch_tiny_app(tmp_path_factory, "fuzz-uploads", env=APP_ENV)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def extract_within_limit(client, reference=REFERENCE, video=None, keypoints=None):
    """(outputs, None) or (None, message) of one /extract_poses call; fails when it takes over CASE_SECONDS."""
    job = client.submit(handle_file(str(reference)), handle_file(str(video)) if video else None,
                        handle_file(str(keypoints)) if keypoints else None, PAPER, 5, REAL_TIME, True, False, 4,
                        False, api_name="/extract_poses")
    try:
        return job.result(timeout=CASE_SECONDS), None
    except AppError as error:
        assert_clean(str(error))
        return None, str(error)
    except concurrent.futures.TimeoutError:
        job.cancel()
        raise AssertionError(f"no answer within {CASE_SECONDS} s") from None


def check_case(client, pattern: str, **files) -> None:
    """A case ends with 5 pose frames or with a message matching `pattern` (what the message is about)."""
    outputs, message = extract_within_limit(client, **files)
    if message is None:
        assert probe_mp4(outputs[0]).num_frames == 5
    else:
        assert re.search(pattern, message, re.I), message


def serves_the_next_request(client) -> None:
    outputs, message = extract_within_limit(client, keypoints=DANCE)
    assert message is None and probe_mp4(outputs[0]).num_frames == 5


def mangle(data: bytes, action: str, where: float, junk: bytes) -> bytes:
    """`data` cut at the fraction `where`, followed by `junk` ("tail"), or with `junk` written over it there."""
    cut = max(1, int(len(data) * where))
    if action == "truncate":
        return data[:cut]
    if action == "tail":
        return data[:cut] + junk
    return data[:cut] + junk + data[cut + len(junk):]


MANGLING = dict(action=st.sampled_from(["truncate", "tail", "overwrite"]), where=st.floats(0, 1),
                junk=st.binary(min_size=1, max_size=512))


# ---------------------------------------------------------------------- images
def _image_seeds() -> dict[str, bytes]:
    """A small photo of a person in each format Pillow writes that the upload check recognises."""
    person = Image.open(REFERENCE).convert("RGB").resize((96, 144))
    seeds = {}
    for name, fmt, options in [("png", "PNG", {}), ("jpg", "JPEG", {}), ("webp", "WEBP", {}), ("gif", "GIF", {}),
                               ("progressive.jpg", "JPEG", {"progressive": True}), ("bmp", "BMP", {}),
                               ("tif", "TIFF", {"compression": "tiff_lzw"})]:
        buffer = io.BytesIO()
        person.save(buffer, fmt, **options)
        seeds[name] = buffer.getvalue()
    return seeds


IMAGES = _image_seeds()


def test_fuzz_reference_images(client, workdir):
    """A real header followed by random bytes, or a real image cut or overwritten at a random point."""

    @FUZZ
    @given(kind=st.sampled_from(sorted(IMAGES)), header_only=st.booleans(), **MANGLING)
    def case(kind, header_only, action, where, junk):
        data = IMAGES[kind]
        data = data[:16] + junk if header_only else mangle(data, action, where, junk)
        path = workdir / f"fuzz.{kind.split('.')[-1]}"
        path.write_bytes(data)
        check_case(client, r"reference image|person", reference=path, keypoints=DANCE)

    case()
    serves_the_next_request(client)


# ---------------------------------------------------------------------- videos
@pytest.fixture(scope="module")
def videos(workdir) -> dict[str, bytes]:
    person = np.asarray(Image.open(REFERENCE).convert("RGB").resize((96, 144)))
    path = Path(write_mp4(workdir / "seed.mp4", np.stack([np.roll(person, 4 * i, axis=1) for i in range(12)]), 16,
                          preset="ultrafast"))
    return {"small": path.read_bytes(), "with audio": (EXAMPLES / "drive_groove_beat.mp4").read_bytes()}


def test_fuzz_driving_videos(client, workdir, videos):
    """An MP4 (with and without audio) cut at a random point, or with random bytes written over a random range."""

    @FUZZ
    @given(kind=st.sampled_from(["small", "with audio"]), **MANGLING)
    def case(kind, action, where, junk):
        path = workdir / "fuzz.mp4"
        path.write_bytes(mangle(videos[kind], action, where, junk))
        check_case(client, r"driving video|person|frame", video=path)

    case()
    serves_the_next_request(client)


# ---------------------------------------------------------------------- keypoint JSON
BIG = "@big@"  # stands for a 5000-digit integer, which json.dumps cannot write
NUMBERS = st.one_of(st.integers(), st.floats(), st.sampled_from([0, -1, 1, 0.5, 1e-9, 1e308, 2**63, 16385, 10**400]),
                    st.just(BIG))
LEAVES = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=6),
                   st.sampled_from(["NaN", "-1", "steadydancer.pose_sequence"]))
KEYS = st.sampled_from(["format", "version", "width", "height", "fps", "frames", "body", "subset", "hands", "face",
                        "faces", "candidate", "body_scores", "hand_scores", "face_scores"]) | st.text(max_size=4)
ANY_JSON = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
                        max_leaves=20)


VALID = json.loads(DANCE.read_text())
VALID["frames"] = VALID["frames"][:6]


def edited(edits) -> dict:
    """The valid document with each (frame index or -1 for the top level, key, value) edit applied in turn."""
    document = json.loads(json.dumps(VALID))
    for index, key, value in edits:
        frames = document.get("frames")
        in_frame = index >= 0 and isinstance(frames, list) and index < len(frames) and isinstance(frames[index], dict)
        (frames[index] if in_frame else document)[key] = value
    return document


NEAR_SCHEMA = st.lists(st.tuples(st.integers(-1, 5), KEYS, NUMBERS | ANY_JSON), min_size=1, max_size=3).map(edited)


def keypoint_text(document, depth: int) -> str:
    """JSON text of `document` (NaN and Infinity as Python writes them), or `depth` nested lists when depth > 0."""
    if depth:
        return "[" * depth + "]" * depth
    return json.dumps(document).replace(json.dumps(BIG), "9" * 5000)


def test_fuzz_keypoint_files(client, workdir):
    """Random JSON, and a valid document with random parts replaced (sizes, rates, shapes, huge numbers), nesting."""

    @FUZZ
    @given(document=ANY_JSON | NEAR_SCHEMA, depth=st.sampled_from([0] * 9 + [100_000]))
    def case(document, depth):
        path = workdir / "fuzz.json"
        path.write_text(keypoint_text(document, depth))
        check_case(client, r"keypoint|person|pose|frame", keypoints=path)

    case()
    serves_the_next_request(client)


def test_the_server_log_holds_no_traceback(app):
    log = app.log()
    assert "Traceback" not in log, log[log.index("Traceback") - 500: log.index("Traceback") + 3000]
