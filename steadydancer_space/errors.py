"""The one place where exceptions become the messages people see.

`user_errors` (a decorator for the app's handlers, sync or async) and `to_user_error` map library exceptions to
`gr.Error`: `InputError` / `PoseError` (and the pipeline's `check_inputs` ValueErrors, which the service re-raises as
`InputError`) keep their message; out-of-memory and cancellation get fixed messages; anything else is logged with a
reference and answered with a generic message, so no traceback or server path ever reaches the client.
"""

import functools
import gc
import inspect
import re
import sys
import traceback
import uuid

from steadydancer.pose.errors import PoseError

from .cancellation import GenerationCancelled
from .uploads import InputError

OOM_MESSAGE = (
    "Out of memory: this request needs more GPU memory than is free. Choose fewer frames or a lower resolution "
    "(whoever runs the app can also start it with --memory-plan offload). The memory has been released; the app is ready for "
    "the next request."
)
CANCELLED_MESSAGE = "Cancelled."
INTERNAL_MESSAGE = (
    "Something went wrong on the server (reference {ref}). Please try again; if it happens again, report the "
    "reference."
)
MAX_MESSAGE_CHARS = 600

# An absolute path, POSIX (/a/b/c) or Windows (C:\a\b): replaced by its last component.
_SEGMENT = r"[^\s'\"()\[\]{}<>,;:|\\/]+"
_PATH = re.compile(rf"(?<![\w.:/\\])/(?:{_SEGMENT}/)*({_SEGMENT})|\b[A-Za-z]:\\(?:{_SEGMENT}\\)*({_SEGMENT})")


class WorkerLost(RuntimeError):
    """Another rank of a several-GPU app stopped or failed during a job (`steadydancer_space.distributed`)."""

    def __init__(self, error: BaseException | None, alone: bool = True):
        what = "stopped during the job" + (f" ({type(error).__name__}); the job was not finished" if error else "")
        then = ("The app now runs on one GPU; press Animate again." if alone else
                "The model's weights were spread over its GPUs, so it cannot go on: the app must be restarted.")
        super().__init__(f"A GPU worker of this app {what}. {then}")


def sanitize(message: str) -> str:
    """A message fit for a visitor: no server paths, no traceback, one paragraph of bounded length."""
    text = str(message)
    if "Traceback (most recent call last)" in text:
        text = text.split("Traceback (most recent call last)")[0].strip() or "The request failed."
    text = _PATH.sub(lambda m: m.group(1) or m.group(2), text).strip()
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 3] + "..."
    return text or "The request failed."


def is_out_of_memory(error: BaseException) -> bool:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


def is_collective_failure(error: BaseException) -> bool:
    """A failed collective of a several-GPU app (another rank gone or too slow), not a failure of this rank's work."""
    dist = sys.modules.get("torch.distributed")
    text = str(error).lower()
    return ((dist is not None and isinstance(error, dist.DistError))
            or any(word in text for word in ("gloo", "nccl", "connection", "peer")))


def free_accelerator_memory() -> None:
    """Drops unreachable tensors and returns cached GPU blocks to the driver (after an OOM or an interruption)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None:
        return
    try:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.ipc_collect()
    except Exception as error:  # a broken CUDA context must not hide the original failure
        print(f"steadydancer: could not empty the CUDA cache: {error}", file=sys.stderr, flush=True)


def to_user_error(error: BaseException):
    """The `gr.Error` a visitor sees for `error` (logging the traceback of unexpected errors with a reference)."""
    import gradio as gr

    if isinstance(error, gr.Error):
        return error
    if isinstance(error, GenerationCancelled):
        return gr.Error(CANCELLED_MESSAGE, print_exception=False)
    if is_out_of_memory(error):
        free_accelerator_memory()
        print(f"steadydancer: out of memory: {sanitize(str(error))}", file=sys.stderr, flush=True)
        return gr.Error(OOM_MESSAGE, print_exception=False)
    if isinstance(error, WorkerLost):
        print(f"steadydancer: {error}", file=sys.stderr, flush=True)
        return gr.Error(str(error), print_exception=False)
    if isinstance(error, (InputError, PoseError)):
        text = sanitize(str(error))
        first = text.split(" ", 1)[0]
        if isinstance(error, PoseError) and first.isalpha() and first.islower():  # the pose package writes "no person
            text = text[0].upper() + text[1:]  # was found ...": a sentence here (API names like num_frames are kept)
        return gr.Error(text, print_exception=False)
    ref = uuid.uuid4().hex[:8]
    print(f"steadydancer: unexpected error (reference {ref}):", file=sys.stderr, flush=True)
    traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    sys.stderr.flush()
    return gr.Error(INTERNAL_MESSAGE.format(ref=ref), print_exception=False)


def user_errors(fn):
    """Decorates a Gradio handler (sync, async or an async generator) so every exception reaches the client as a
    clear `gr.Error`.

    The signature is kept (`functools.wraps`), so Gradio still finds `gr.Request` and `gr.Progress` parameters.
    `asyncio.CancelledError` (Gradio's cancel) passes through untouched.
    """
    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def async_generator_wrapper(*args, **kwargs):
            try:
                async for item in fn(*args, **kwargs):
                    yield item
            except Exception as error:
                raise to_user_error(error) from None

        return async_generator_wrapper

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args, **kwargs):
            try:
                return await fn(*args, **kwargs)
            except Exception as error:
                raise to_user_error(error) from None

        return async_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            raise to_user_error(error) from None

    return wrapper
