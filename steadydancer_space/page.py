"""The page's glue to Gradio: values in as sent, files out through Gradio's cache, progress, a job streamed with its
previews, and the small helpers of the form (history, sliders, frames and seconds)."""

import asyncio
import contextlib
import os

import gradio as gr

from steadydancer.defaults import OUTPUT_FPS, PRESETS
from steadydancer.sizing import nearest_valid_frame_count

from .outputs import latest_preview, thumbnail

MAX_HISTORY = 12
PREVIEW_POLL_SECONDS = 0.5


def _payload_path(payload):
    path = getattr(payload, "path", None)
    if path is None and isinstance(payload, dict):
        path = payload.get("path")
    return path


def pass_through_inputs(components) -> None:
    """Hands each handler the values a request sent: a server path for files (image, video, JSON), the raw value
    for everything else, so validation happens once, in `steadydancer_space.request` and the upload checks, with
    messages naming the API parameter.

    Gradio has no public switch for this, so `preprocess` is replaced on each instance: its own preprocessing checks
    ranges and choices with messages that name no field, lets NaN through, refuses older clients' choice labels,
    opens images before their content is checked and leaves an empty temporary file per `gr.File` request."""

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



def publish(path: str | None) -> str | None:
    """Copies an output file into Gradio's upload cache (removed by the app's `delete_cache` schedule) and returns
    the copy, so the request's working directory can be deleted at once. Gradio finds the copy already cached when
    it post-processes the response."""
    if path is None:
        return None
    from gradio import processing_utils
    from gradio.utils import get_upload_folder

    return processing_utils.save_file_to_cache(path, cache_dir=get_upload_folder())


def reporter(progress):
    """The service's progress(done, total, description) shown on a Gradio progress bar."""
    if progress is None:
        return None

    def report(done, total, desc):
        unit = "frames" if desc.startswith("Detecting") else "steps"
        progress((done, total) if total else None, desc=desc, unit=unit)

    return report


async def stream_job(run, work: str, interrupt, num_outputs: int):
    """Runs `run()` (returning the outputs) in a worker thread; yields the latest preview written in `work` while it
    runs, as the last of `num_outputs` + 1 values, then the outputs and the preview. Gradio's cancel calls
    `interrupt()`, which stops the job after its current step."""

    task = asyncio.ensure_future(asyncio.to_thread(run))
    shown = preview = None
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=PREVIEW_POLL_SECONDS)
            latest = latest_preview(work)
            if latest and latest != shown:
                with contextlib.suppress(OSError):  # the job may have ended and taken its folder with it
                    preview, shown = publish(latest), latest
                    yield (gr.skip(),) * num_outputs + (preview,)
        yield (*task.result(), preview)
    except asyncio.CancelledError:
        interrupt()
        raise


def clear_result():
    return None, None, "", None, None, None


def cancelled_note():
    return "**Cancelled.** Nothing was made; change the settings and press Animate again."


def add_to_history(history, video, seed, recipe):
    """This visitor's results (a `gr.State`: never shared between sessions), newest first. Entries whose files
    Gradio's cache has swept (after the file time-to-live) are dropped."""
    history = [entry for entry in history or [] if os.path.exists(entry["video"])]
    if video:
        history.insert(0, {"video": video, "thumbnail": thumbnail(video), "seed": seed, "recipe": recipe})
    del history[MAX_HISTORY:]
    return history, [(e["thumbnail"], history_caption(e)) for e in history]


def history_caption(entry) -> str:
    recipe = entry["recipe"] or {}
    return (f"seed {entry['seed']} · {recipe.get('steps')} steps · {recipe.get('resolution')} · "
            f"{recipe.get('num_frames')} frames")


def show_history_entry(history, selected: gr.SelectData):
    entry = (history or [])[selected.index] if selected.index < len(history or []) else None
    return (entry["video"], entry["recipe"]) if entry and os.path.exists(entry["video"]) else (None, None)


def show_motion_source(kind: str):
    """The change handler of one motion input: when it gets a file, the other input is cleared and its tab shown."""

    def show(value):
        if not value:
            return gr.skip(), gr.skip()
        return None, gr.Tabs(selected=kind)

    return show


def preset_sliders(name):
    """A preset's steps and text guidance, shown on the sliders ("custom" leaves them as they are)."""

    if name not in PRESETS:
        return gr.skip(), gr.skip()
    settings = PRESETS[name].settings
    return settings.num_inference_steps, settings.guidance_scale


def frames_to_seconds(num_frames):
    return round(int(num_frames) / OUTPUT_FPS, 2)


def seconds_to_frames(seconds, min_frames: int, max_frames: int):
    frames = nearest_valid_frame_count(int(round(float(seconds or 0) * OUTPUT_FPS)) + 1)
    frames = min(max(frames, min_frames), max_frames)
    return frames, frames_to_seconds(frames)
