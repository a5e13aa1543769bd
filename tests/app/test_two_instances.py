"""Two instances of `python app.py --tiny` with default settings on one machine (one temp directory): stopping one
leaves the other's uploads and outputs in place, and takes its own temp folder with it."""

import pytest

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

import httpx  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402

from helpers.app_launcher import start_app  # noqa: E402
from helpers.paths import EXAMPLES, TEST_OUTPUT  # noqa: E402

PAPER = "576p (1024x576, paper)"
REAL_TIME = "Real time (16 fps)"
FILES = (EXAMPLES / "ref_red_dress.png", EXAMPLES / "dance_wave.json")


def served_files(app) -> list[str]:
    """The server paths of one upload of FILES and of the outputs of one /extract_poses on them."""
    with httpx.Client() as http:
        response = http.post(app.url + "gradio_api/upload",
                             files=[("files", (path.name, path.read_bytes())) for path in FILES])
    uploads = response.json()
    client = Client(app.url, verbose=False, download_files=False)
    outputs = client.predict(handle_file(str(FILES[0])), None, handle_file(str(FILES[1])), PAPER, 5, REAL_TIME,
                             True, False, 4, False, api_name="/extract_poses")
    return uploads + [o["path"] for o in outputs if isinstance(o, dict) and o.get("path")]


def test_stopping_one_instance_keeps_the_others_files(tmp_path):
    import os

    shared = tmp_path / "tmp"
    shared.mkdir()
    apps = []
    try:
        for name in ("first", "second"):
            # Defaults: no GRADIO_TEMP_DIR (empty is unset), the machine's one temp directory.
            env = {"TMPDIR": str(shared), "GRADIO_TEMP_DIR": "",
                   "GRADIO_EXAMPLES_CACHE": str(shared / f"examples-{name}")}
            apps.append(start_app(["--tiny"], env=env, log_path=TEST_OUTPUT / f"two_instances_{name}.log"))
        first, second = apps
        served_files(first)  # the same files on both: the same content-addressed names
        kept = served_files(second)
        assert len(kept) >= 4 and all(os.path.exists(path) for path in kept)
        folders = set(shared.glob("steadydancer-gradio-*"))
        first.stop()
        missing = [path for path in kept if not os.path.exists(path)]
        assert not missing, missing
        assert len(set(shared.glob("steadydancer-gradio-*"))) == len(folders) - 1  # the stopped one cleaned up
    finally:
        for app in apps:
            app.stop()
