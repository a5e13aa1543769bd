"""Fuzzing every parameter of `/animate`, `/extract_poses` and `/estimate` of a launched `python app.py --tiny` with
raw HTTP calls (`/gradio_api/call/<endpoint>`), so any JSON type reaches each parameter: numbers (NaN, infinities,
huge, negative, booleans, strings), strings (huge, NUL, unicode), pose_edits and keypoint JSON of random structure,
and files of the wrong kind or not files at all. A valid call is changed in one to three parameters; each case must
end within `CASE_SECONDS` with a result or a clean message (no HTTP 500, no traceback or server path), and the server
log holds no traceback at the end. Hypothesis runs derandomized with a bounded example count (reproducible in CI)."""

import json
import math
import time

import pytest

pytest.importorskip("gradio")
httpx = pytest.importorskip("httpx")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from helpers.app_launcher import launch_tiny_app  # noqa: E402
from helpers.limited_app import APP_ENV, PAPER, REAL_TIME, assert_clean  # noqa: E402
from helpers.paths import EXAMPLES  # noqa: E402

CASE_SECONDS = 30  # the hang limit of one case (a valid tiny animation takes a few seconds)


def fuzz(examples: int):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    yield from launch_tiny_app(tmp_path_factory, "fuzz-api", env=APP_ENV)


@pytest.fixture(scope="module")
def http(app):
    with httpx.Client(base_url=app.url.rstrip("/"), timeout=CASE_SECONDS) as client:
        yield client


@pytest.fixture(scope="module")
def files(http, tmp_path_factory) -> dict:
    """FileData of uploaded files of every kind, by name."""
    root = tmp_path_factory.mktemp("fuzz-api")
    (root / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("not a pose \x00 file")
    paths = {"photo": EXAMPLES / "ref_red_dress.png", "keypoints": EXAMPLES / "dance_wave.json",
             "reference keypoints": EXAMPLES / "ref_red_dress.json", "video": EXAMPLES / "drive_groove_beat.mp4",
             "empty": root / "empty.png", "text": root / "notes.txt"}
    uploaded = {}
    for name, path in paths.items():
        response = http.post("/gradio_api/upload", files={"files": (path.name, path.read_bytes())})
        response.raise_for_status()
        uploaded[name] = {"path": response.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}
    return uploaded


def call(http, endpoint: str, data) -> tuple[str, object]:
    """(event, data) of one raw API call: ("complete", outputs), ("error", message) or ("refused", HTTP status).
    Fails on an HTTP 500 and on an answer that takes longer than CASE_SECONDS."""
    started = time.monotonic()
    body = json.dumps({"data": data})  # NaN and Infinity written as Python writes them, as a hostile client may
    response = http.post(f"/gradio_api/call/{endpoint}", content=body, headers={"content-type": "application/json"})
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code != 200:
        return "refused", response.status_code
    event_id = response.json()["event_id"]
    event = None
    with http.stream("GET", f"/gradio_api/call/{endpoint}/{event_id}") as stream:
        assert stream.status_code < 500, stream.status_code
        for line in stream.iter_lines():
            assert time.monotonic() - started < CASE_SECONDS, f"no answer within {CASE_SECONDS} s"
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                return event, json.loads(line.split(":", 1)[1])
    raise AssertionError(f"the stream ended without a result (last event {event!r})")


def check(http, endpoint: str, data) -> None:
    event, payload = call(http, endpoint, data)
    if event == "error" and payload is not None:
        assert_clean(str(payload.get("error") if isinstance(payload, dict) else payload))


# ---------------------------------------------------------------------- value domains
HUGE_TEXT = "x" * 200_000
NUMBERS = st.one_of(
    st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
    st.sampled_from([0, -1, 1, 0.5, 2**63, 2**64 + 1, 10**30, -(10**30), 1e308, -1e308, 1e-300]),
    st.sampled_from(["nan", "inf", "-inf", "1e999", "3", " 7 ", "", "seven", "0x10", "1_000"]),
)
TEXTS = st.one_of(st.text(max_size=40), st.sampled_from([HUGE_TEXT, "\x00", "a\x00b", "💃🕺" * 50, "\u202e", " "]))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
POSE_EDITS_KEYS = st.sampled_from(["reference", "frames", "smoothing", "retarget", "joints", "fit", "scale",
                                   "move_x", "move_y", "index", "body", "strength"]) | st.text(max_size=6)
POSE_EDITS = st.one_of(
    st.recursive(JSON_VALUES, lambda inner: st.dictionaries(POSE_EDITS_KEYS, inner, max_size=4), max_leaves=12)
    .map(json.dumps),
    TEXTS, st.sampled_from(["{", "[]", "null", "{}", '{"smoothing": 1e999}', '{"frames": [{"index": 1e20}]}']),
)
ANY = st.one_of(NUMBERS, TEXTS, JSON_VALUES, st.just(float("nan")), st.just(math.inf))
FILE_NAMES = ["photo", "keypoints", "reference keypoints", "video", "empty", "text"]
# A file parameter gets an uploaded file of any kind or nothing. Values that are not uploads (numbers, strings, lists,
# paths the server did not receive) are refused by Gradio's own input handling before any handler, which logs a
# traceback for each: they are left out until a middleware refuses them first.
NOT_FILES = st.none()


def file_values(files):
    return st.sampled_from(FILE_NAMES).map(lambda name: files[name]) | NOT_FILES


# Each endpoint's parameters in order: (name, valid value, what else to try).
def parameters(files):
    file_or_not = file_values(files)
    choice = TEXTS | ANY
    return {
        "extract_poses": [
            ("reference", files["photo"], file_or_not), ("driving_video", None, file_or_not),
            ("keypoints", files["keypoints"], file_or_not), ("resolution", PAPER, choice),
            ("num_frames", 5, NUMBERS | ANY), ("motion", REAL_TIME, choice), ("align_to_reference", True, ANY),
            ("smooth_start", False, ANY), ("smooth_start_frames", 4, NUMBERS | ANY), ("auto_start", False, ANY),
            ("fidelity", "default", choice), ("reference_keypoints", None, file_or_not),
            ("pose_edits", "", POSE_EDITS | ANY),
        ],
        "animate": [
            ("reference", files["photo"], file_or_not), ("driving_video", None, file_or_not),
            ("keypoints", files["keypoints"], file_or_not), ("prompt", "a person dancing", TEXTS | ANY),
            ("negative_prompt", "", TEXTS | ANY), ("resolution", PAPER, choice), ("num_frames", 5, NUMBERS | ANY),
            ("motion", REAL_TIME, choice), ("align_to_reference", True, ANY), ("smooth_start", False, ANY),
            ("smooth_start_frames", 4, NUMBERS | ANY), ("auto_start", False, ANY),
            ("guidance_scale", 1.0, NUMBERS | ANY), ("pose_guidance_scale", 1.0, NUMBERS | ANY),
            ("window_start", 0.1, NUMBERS | ANY), ("window_end", 0.5, NUMBERS | ANY), ("steps", 2, NUMBERS | ANY),
            ("shift", 5.0, NUMBERS | ANY), ("seed", 1, NUMBERS | ANY), ("randomize_seed", False, ANY),
            ("fidelity", "default", choice), ("preset", "custom", choice),
            ("reference_keypoints", None, file_or_not), ("pose_edits", "", POSE_EDITS | ANY),
        ],
        "estimate": [
            ("reference", files["photo"], file_or_not), ("resolution", PAPER, choice),
            ("num_frames", 81, NUMBERS | ANY), ("steps", 40, NUMBERS | ANY), ("guidance_scale", 5.0, NUMBERS | ANY),
            ("pose_guidance_scale", 1.0, NUMBERS | ANY), ("window_start", 0.1, NUMBERS | ANY),
            ("window_end", 0.5, NUMBERS | ANY), ("preset", "quality", choice),
        ],
    }


def changed_calls(files, endpoint: str):
    """The endpoint's valid call with one to three parameters replaced by values of their domain or any JSON."""
    params = parameters(files)[endpoint]
    changes = st.lists(st.integers(0, len(params) - 1).flatmap(lambda i: st.tuples(st.just(i), params[i][2])),
                       min_size=1, max_size=3)

    def apply(edits):
        data = [value for _, value, _ in params]
        for index, value in edits:
            data[index] = value
        return data

    return changes.map(apply)


def test_valid_calls_of_each_endpoint_succeed(http, files):
    for endpoint, params in parameters(files).items():
        event, payload = call(http, endpoint, [value for _, value, _ in params])
        assert event == "complete", (endpoint, payload)


@pytest.mark.parametrize("endpoint,examples", [("estimate", 60), ("extract_poses", 40), ("animate", 30)])
def test_fuzz_every_parameter(http, files, endpoint, examples):
    @fuzz(examples)
    @given(data=changed_calls(files, endpoint))
    def case(data):
        check(http, endpoint, data)

    case()
    valid = [value for _, value, _ in parameters(files)[endpoint]]
    assert call(http, endpoint, valid)[0] == "complete"  # and the endpoint still serves


@pytest.mark.parametrize("endpoint", ["estimate", "extract_poses", "animate"])
@pytest.mark.parametrize("data", [None, 5, "text", {}, [None] * 40], ids=repr)
def test_malformed_argument_lists_are_refused_cleanly(http, endpoint, data):
    check(http, endpoint, data)


def test_the_server_log_holds_no_traceback(app):
    log = app.log()
    assert "Traceback" not in log, log[log.index("Traceback") - 500: log.index("Traceback") + 3000]
