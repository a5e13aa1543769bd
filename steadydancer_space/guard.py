"""What stands between a visitor and the library: the ONE place where exceptions become the messages people see, the
hardening of Gradio's input components, GPU-memory release after a failure, and the hand-over of output files.

- `user_errors` (a decorator for the app's handlers, sync or async) and `to_user_error` map library exceptions to
  `gr.Error`: `InputError` / `PoseError` (and the pipeline's `check_inputs` ValueErrors, which the service re-raises
  as `InputError`) keep their message; out-of-memory and cancellation get fixed messages; anything else is logged
  with a reference and answered with a generic message, so no traceback or server path ever reaches the client.
- `pass_through_inputs` hands the handlers what a request sent (file paths, raw values), so every value is checked
  once, by `steadydancer_space.request` and `steadydancer_space.uploads`, with messages naming the API parameter.
- `CancelListener` and `MissingArgumentDefaults` (ASGI middlewares) see cancels before Gradio does, and complete
  calls written for an endpoint's shorter, earlier parameter list.
- `publish` copies an output into Gradio's upload cache (which `delete_cache` empties on a schedule), so the request's
  own working directory can be deleted before the response is sent.
"""

import functools
import gc
import inspect
import json
import re
import sys
import traceback
import uuid

from steadydancer.pose.errors import PoseError

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


class GenerationCancelled(Exception):
    """The visitor cancelled; raised from the step callback so the VAE decode of a half-denoised video is skipped."""


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


# ---------------------------------------------------------------------- input components
def _payload_path(payload):
    path = getattr(payload, "path", None)
    if path is None and isinstance(payload, dict):
        path = payload.get("path")
    return path


def pass_through_inputs(components) -> None:
    """Replaces the `preprocess` of each input component so the handler receives the value as sent: a server path
    for files (image, video, JSON), the raw value for everything else. Validation then happens once, in
    `steadydancer_space.request` and the upload checks, with messages naming the API parameter; Gradio's own
    preprocessing would check ranges and choices with messages that name no field, let NaN through, refuse the
    first release's choice labels, open images before their content is checked and leave an empty temporary file
    per `gr.File` request."""
    import gradio as gr

    for component in components:
        if isinstance(component, (gr.Image, gr.Video, gr.File)):

            def as_path(payload):
                if payload is None:
                    return None
                path = _payload_path(payload)
                if not path:
                    raise gr.Error("An uploaded file was not received; upload it again.", print_exception=False)
                return str(path)

            component.preprocess = as_path  # an instance attribute: Gradio calls `block.preprocess(...)`
        else:
            component.preprocess = lambda payload: payload


# ---------------------------------------------------------------------- request middlewares (cancels, short calls)
MAX_INSPECTED_BODY = 1024 * 1024  # request bodies read by the middlewares below; larger ones pass unread
MAX_SESSION_CHARS = 128


async def _read_json_body(receive) -> tuple[list, object]:
    """The request's ASGI messages (to replay) and its JSON body (None when too large, not JSON or incomplete)."""
    messages, size = [], 0
    while True:
        message = await receive()
        messages.append(message)
        size += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body") or size > MAX_INSPECTED_BODY:
            break
    if size > MAX_INSPECTED_BODY or messages[-1]["type"] != "http.request" or messages[-1].get("more_body"):
        return messages, None
    try:
        return messages, json.loads(b"".join(m.get("body", b"") for m in messages))
    except ValueError:
        return messages, None


def _replay(messages: list, receive):
    async def replayed():
        return messages.pop(0) if messages else await receive()

    return replayed


def _is_post_to(scope, pattern: "re.Pattern") -> "re.Match | None":
    if scope["type"] != "http" or scope.get("method") != "POST":
        return None
    return pattern.search(scope["path"].rstrip("/"))


class CancelListener:
    """ASGI middleware that sees every POST to Gradio's `/cancel` route (the browser's Cancel button and
    `gradio_client`'s `job.cancel()` both send one) and calls `on_cancel(session_hash, event_id)` before Gradio
    handles it; `event_id` is None when the client did not know its event yet (it cancelled before submitting).

    Gradio's own cancel stops the session's running task only. A cancel sent while the job is still waiting in the
    queue, or before the client has even submitted it (gradio_client cancels during its upload and submits anyway),
    would leave the job to run to the end unseen; `on_cancel` takes care of those. The request reaches Gradio
    unchanged.
    """

    PATH = re.compile(r"/cancel$")

    def __init__(self, app, on_cancel):
        self.app, self.on_cancel = app, on_cancel

    async def __call__(self, scope, receive, send):
        if not _is_post_to(scope, self.PATH):
            return await self.app(scope, receive, send)
        messages, body = await _read_json_body(receive)
        session = body.get("session_hash") if isinstance(body, dict) else None
        if isinstance(session, str) and 0 < len(session) <= MAX_SESSION_CHARS:  # Gradio's are short random ids
            event_id = body.get("event_id")
            self.on_cancel(session, event_id if isinstance(event_id, str) and event_id else None)
        await self.app(scope, _replay(messages, receive), send)


class MissingArgumentDefaults:
    """ASGI middleware that completes calls sending fewer values than an endpoint takes: the missing trailing values
    are the endpoint's defaults, `defaults(api_name or fn_index)` (None: leave the call alone).

    Parameters are added at the end of an endpoint's list; `gradio_client` fills them in, but a raw HTTP call
    (`curl .../call/animate`) written for the shorter list would otherwise fail inside Gradio, before any handler,
    with no message. Routes: `/call/<name>`, `/call/v2/<name>`, `/run/<name>`, `/api/<name>`, `/queue/join`.
    """

    PATH = re.compile(r"/(?:call(?:/v2)?|run|api)/(?P<api_name>[\w-]+)$|/queue/join$")

    def __init__(self, app, defaults):
        self.app, self.defaults = app, defaults

    async def __call__(self, scope, receive, send):
        match = _is_post_to(scope, self.PATH)
        if not match:
            return await self.app(scope, receive, send)
        messages, body = await _read_json_body(receive)
        data = body.get("data") if isinstance(body, dict) else None
        key = match["api_name"] or (body.get("fn_index") if isinstance(body, dict) else None)
        fill = self.defaults(key) if isinstance(data, list) and key is not None else None
        if fill and len(data) < len(fill):
            raw = json.dumps({**body, "data": data + list(fill[len(data):])}).encode()
            messages = [{"type": "http.request", "body": raw, "more_body": False}]
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
            scope = {**scope, "headers": headers + [(b"content-length", str(len(raw)).encode())]}
        await self.app(scope, _replay(messages, receive), send)


# ---------------------------------------------------------------------- output files
def publish(path: str | None) -> str | None:
    """Copies an output file into Gradio's upload cache (removed by the app's `delete_cache` schedule) and returns
    the copy, so the request's working directory can be deleted at once. Gradio finds the copy already cached when
    it post-processes the response."""
    if path is None:
        return None
    from gradio import processing_utils
    from gradio.utils import get_upload_folder

    return processing_utils.save_file_to_cache(path, cache_dir=get_upload_folder())
