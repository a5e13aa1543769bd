"""The app under small limits, as the reliability and upload-fuzz tests launch it, and what no error message it sends
may contain."""

OOM_SEED = 987_654_321  # the seed whose generation the injected fault turns into an out-of-memory error
MAX_FRAMES, MAX_STEPS, MAX_PROMPT = 33, 20, 300
APP_ENV = {
    "STEADYDANCER_QUEUE_SIZE": "2",
    "STEADYDANCER_CONCURRENCY": "1",
    "STEADYDANCER_FAULT": f"oom_seed={OOM_SEED}",
    "STEADYDANCER_MAX_FILE_MB": "1",
    "STEADYDANCER_MAX_IMAGE_PIXELS": "1000000",
    "STEADYDANCER_MAX_VIDEO_PIXELS": "500000",
    "STEADYDANCER_MAX_VIDEO_SECONDS": "8",
    "STEADYDANCER_MAX_PROMPT_CHARS": str(MAX_PROMPT),
    "STEADYDANCER_MAX_STEPS": str(MAX_STEPS),
    "STEADYDANCER_MAX_FRAMES": str(MAX_FRAMES),
}
PAPER = "576p (1024x576, paper)"
REAL_TIME = "Real time (16 fps)"
INTERNAL = "Something went wrong on the server"
FORBIDDEN = ("Traceback", "File \"", "/tmp/", "site-packages", INTERNAL)


def assert_clean(message: str) -> None:
    """A message fit for a visitor: not empty, no traceback, server path or internal error."""
    assert message and message.strip(), "empty error message"
    for bad in FORBIDDEN:
        assert bad not in message, f"{bad!r} in {message!r}"
